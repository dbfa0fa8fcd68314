-- Every kept chunk and rollup row now counts 150 bytes (`ROW_BYTES`) beside its payload, for as
-- long as the row is kept: rows outlive their payloads, and uncounted they let a space grow the
-- database without bound. `mend_push` charges it from now on (same arguments, so an instance
-- not yet upgraded charges it too); the rows already stored are charged here, and the relay
-- total recounted.
CREATE OR REPLACE FUNCTION mend_push(
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
        -- The payload and the row that outlives it (`ROW_BYTES`).
        len := length(p_payloads[i]) + 150;
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

UPDATE spaces SET bytes_used = bytes_used
  + 150 * ((SELECT COUNT(*) FROM chunks c WHERE c.space = spaces.id)
         + (SELECT COUNT(*) FROM rollups r WHERE r.space = spaces.id));
UPDATE relay_usage SET bytes_used = CASE WHEN shard = 0
    THEN (SELECT COALESCE(SUM(bytes_used), 0) FROM spaces) ELSE 0 END;
