-- Chunk and rollup rows outlive their payloads (a pruned chunk's hash answers replays), so the
-- relay-wide total now counts 150 bytes (`ROW_BYTES`) for each row kept, beside the payloads:
-- uncounted, rows let a client grow the database without bound. A space's own quota still
-- counts payloads alone, so no space is ever full for good. `rows` is each space's count of
-- kept rows; `mend_push` keeps it and charges the total from now on (same arguments, so an
-- instance not yet upgraded charges it too). The rows already stored are counted here.
ALTER TABLE spaces ADD COLUMN rows bigint NOT NULL DEFAULT 0;
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
        len := length(p_payloads[i]);
        hash := sha256(p_payloads[i]);
        -- The relay counts the row too: it is kept after the payload is deleted.
        fits := total + added + len + 150 <= p_total;
        IF useds[k] + len <= p_quotas[i] AND fits THEN
            INSERT INTO chunks (space, seq, device_id, device_seq, payload, payload_hash)
            VALUES (ids[k], nexts[k], p_devices[i], p_device_seqs[i], p_payloads[i], hash)
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                status := 0; relay_seq := nexts[k]; used := useds[k] + len;
                nexts[k] := nexts[k] + 1;
                useds[k] := useds[k] + len;
                added := added + len + 150;
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
    -- Every chunk stored took one sequence: as many rows kept.
    UPDATE spaces s SET next_seq = u.next_seq, bytes_used = u.bytes_used,
                        rows = s.rows + (u.next_seq - s.next_seq)
      FROM unnest(ids, nexts, useds) AS u(id, next_seq, bytes_used)
     WHERE s.id = u.id AND (s.next_seq, s.bytes_used) IS DISTINCT FROM (u.next_seq, u.bytes_used);
    IF added <> 0 THEN
        UPDATE relay_usage SET bytes_used = bytes_used + added
         WHERE shard = (SELECT floor(random() * 64)::smallint);
    END IF;
END;
$$;

UPDATE spaces SET rows = (SELECT COUNT(*) FROM chunks c WHERE c.space = spaces.id)
                       + (SELECT COUNT(*) FROM rollups r WHERE r.space = spaces.id);
-- Each space itself counts 9750 bytes (`SPACE_BYTES`: its row and the 64 devices it may list
-- as seen), and each erased space's tombstone, kept for good, 150 (`TOMBSTONE_BYTES`), so
-- neither empty spaces nor erased ones grow the database past the limit.
UPDATE relay_usage SET bytes_used = CASE WHEN shard = 0
    THEN (SELECT COALESCE(SUM(bytes_used + 150 * rows + 9750), 0) FROM spaces)
       + 150 * (SELECT COUNT(*) FROM erased) ELSE 0 END;
