-- The SHA-256 of each chunk's payload, kept after pruning, so a push that reuses a device's
-- sequence with another payload (a device rolled back or copied) is refused as a conflict
-- instead of being acknowledged as a duplicate. Rows from before this migration have none:
-- they are compared by payload while it is held, and count as duplicates once pruned.
ALTER TABLE chunks ADD COLUMN payload_hash bytea;

-- mend_push as before, with status 4: the (device, device_seq) is stored with another payload
-- (`relay_seq` is the stored chunk's); nothing is stored. Same signature, so instances still
-- running the previous version call this one; they answer status 4 as an internal error.
CREATE OR REPLACE FUNCTION mend_push(
    p_spaces bytea[], p_devices bytea[], p_device_seqs bigint[], p_payloads bytea[],
    p_quotas bigint[]
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
BEGIN
    SELECT array_agg(l.space_id), array_agg(l.id), array_agg(l.next_seq), array_agg(l.bytes_used)
      INTO sids, ids, nexts, useds
      FROM (SELECT s.space_id, s.id, s.next_seq, s.bytes_used FROM spaces s
             WHERE s.space_id = ANY (p_spaces) ORDER BY s.id FOR UPDATE) l;
    FOR i IN 1 .. coalesce(array_length(p_spaces, 1), 0) LOOP
        k := array_position(sids, p_spaces[i]);
        IF k IS NULL THEN
            status := 2; relay_seq := 0; used := 0;
            RETURN NEXT;
            CONTINUE;
        END IF;
        len := length(p_payloads[i]);
        hash := sha256(p_payloads[i]);
        IF useds[k] + len <= p_quotas[i] THEN
            INSERT INTO chunks (space, seq, device_id, device_seq, payload, payload_hash)
            VALUES (ids[k], nexts[k], p_devices[i], p_device_seqs[i], p_payloads[i], hash)
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                status := 0; relay_seq := nexts[k]; used := useds[k] + len;
                nexts[k] := nexts[k] + 1;
                useds[k] := useds[k] + len;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        -- Over quota or refused by the dedup index: a replay, a conflict, or (over quota and
        -- never stored) a quota refusal.
        SELECT c.seq, coalesce(c.payload_hash, sha256(c.payload)) INTO dup, dup_hash FROM chunks c
         WHERE c.space = ids[k] AND c.device_id = p_devices[i]
           AND c.device_seq = p_device_seqs[i];
        IF NOT FOUND THEN
            status := 3; relay_seq := 0; used := useds[k];
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
END;
$$;
