-- The bytes of all spaces together, for the relay-wide quota, kept in the same transaction as
-- the per-space counters. One hot row would serialise every batch of every instance on its row
-- lock until commit, so the total is spread over 64 rows: each transaction adds its change to
-- one row chosen at random, and the total is their sum (64 rows, not one per space). A row may
-- go negative; only the sum means anything.
CREATE TABLE relay_usage (
    shard       smallint PRIMARY KEY,
    bytes_used  bigint   NOT NULL
);
INSERT INTO relay_usage (shard, bytes_used)
SELECT g, CASE WHEN g = 0 THEN (SELECT COALESCE(SUM(bytes_used), 0) FROM spaces) ELSE 0 END
  FROM generate_series(0, 63) AS g;

-- mend_push with the relay-wide limit `p_total`: status 5, the relay is full (`used` is the
-- total before the push); nothing is stored. The total is read once, unlocked, when the batch
-- starts: concurrent batches each check against what was committed before them, so together
-- they may pass the limit by what they commit at once. The 5-argument version stays for
-- instances not yet upgraded, but their pushes are not counted in the total: upgrade every
-- instance together.
CREATE FUNCTION mend_push(
    p_spaces bytea[], p_devices bytea[], p_device_seqs bigint[], p_payloads bytea[],
    p_quotas bigint[], p_total bigint
) RETURNS TABLE (status smallint, relay_seq bigint, used bigint)
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    k integer;
    dup bigint;
    dup_hash bytea;
    hash bytea;
    len bigint;
    sids bytea[];
    ids bigint[];
    nexts bigint[];
    useds bigint[];
    total bigint;
    added bigint := 0;
    fits boolean;
BEGIN
    SELECT array_agg(l.space_id), array_agg(l.id), array_agg(l.next_seq), array_agg(l.bytes_used)
      INTO sids, ids, nexts, useds
      FROM (SELECT s.space_id, s.id, s.next_seq, s.bytes_used FROM spaces s
             WHERE s.space_id = ANY (p_spaces) ORDER BY s.id FOR UPDATE) l;
    SELECT COALESCE(SUM(r.bytes_used), 0) INTO total FROM relay_usage r;
    FOR i IN 1 .. coalesce(array_length(p_spaces, 1), 0) LOOP
        k := array_position(sids, p_spaces[i]);
        IF k IS NULL THEN
            status := 2; relay_seq := 0; used := 0;
            RETURN NEXT;
            CONTINUE;
        END IF;
        len := length(p_payloads[i]);
        hash := sha256(p_payloads[i]);
        fits := total + added + len <= p_total;
        IF useds[k] + len <= p_quotas[i] AND fits THEN
            INSERT INTO chunks (space, seq, device_id, device_seq, payload, payload_hash)
            VALUES (ids[k], nexts[k], p_devices[i], p_device_seqs[i], p_payloads[i], hash)
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                status := 0; relay_seq := nexts[k]; used := useds[k] + len;
                nexts[k] := nexts[k] + 1;
                useds[k] := useds[k] + len;
                added := added + len;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        -- Over a quota or refused by the dedup index: a replay, a conflict, or (never stored)
        -- a quota refusal, the space's first.
        SELECT c.seq, coalesce(c.payload_hash, sha256(c.payload)) INTO dup, dup_hash FROM chunks c
         WHERE c.space = ids[k] AND c.device_id = p_devices[i]
           AND c.device_seq = p_device_seqs[i];
        IF NOT FOUND THEN
            IF useds[k] + len > p_quotas[i] THEN
                status := 3; relay_seq := 0; used := useds[k];
            ELSE
                status := 5; relay_seq := 0; used := total + added;
            END IF;
        ELSIF dup_hash IS NOT NULL AND dup_hash <> hash THEN
            status := 4; relay_seq := dup; used := useds[k];
        ELSE
            status := 1; relay_seq := dup; used := useds[k];
        END IF;
        RETURN NEXT;
    END LOOP;
    UPDATE spaces s SET next_seq = u.next_seq, bytes_used = u.bytes_used
      FROM unnest(ids, nexts, useds) AS u(id, next_seq, bytes_used)
     WHERE s.id = u.id AND (s.next_seq, s.bytes_used) IS DISTINCT FROM (u.next_seq, u.bytes_used);
    IF added <> 0 THEN
        UPDATE relay_usage SET bytes_used = bytes_used + added
         WHERE shard = (SELECT floor(random() * 64)::smallint);
    END IF;
END;
$$;
