-- mend_push with one INSERT for the whole batch. The loop of 004 runs one INSERT per push, and
-- each statement a PL/pgSQL loop runs has a fixed executor cost that, at batch sizes of 10-50,
-- was most of the database's CPU per push. The common batch (every space known, every push new
-- and within the quotas) is now planned in the function's own arrays, with no statement per
-- push, and stored by one INSERT ... SELECT FROM unnest. Anything else (an unknown space, a
-- quota reached, a replay) runs the loop of 004, kept as `mend_push_each`, which answers every
-- case exactly as before.

ALTER FUNCTION mend_push(bytea[], bytea[], bigint[], bytea[], bigint[], bigint)
    RENAME TO mend_push_each;

CREATE FUNCTION mend_push(
    p_spaces bytea[], p_devices bytea[], p_device_seqs bigint[], p_payloads bytea[],
    p_quotas bigint[], p_total bigint
) RETURNS TABLE (status smallint, relay_seq bigint, used bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(array_length(p_spaces, 1), 0);
    i integer;
    k integer;
    len bigint;
    sids bytea[];
    ids bigint[];
    firsts bigint[];
    nexts bigint[];
    useds bigint[];
    total bigint;
    added bigint := 0;
    row_ids bigint[] := '{}';
    row_seqs bigint[] := '{}';
    row_useds bigint[] := '{}';
    stored bigint;
BEGIN
    -- Spaces are locked in id order, as in every write, so batches never deadlock.
    SELECT array_agg(l.space_id), array_agg(l.id), array_agg(l.next_seq), array_agg(l.bytes_used)
      INTO sids, ids, nexts, useds
      FROM (SELECT s.space_id, s.id, s.next_seq, s.bytes_used FROM spaces s
             WHERE s.space_id = ANY (p_spaces) ORDER BY s.id FOR UPDATE) l;
    firsts := nexts;
    SELECT COALESCE(SUM(r.bytes_used), 0) INTO total FROM relay_usage r;
    FOR i IN 1 .. n LOOP
        k := array_position(sids, p_spaces[i]);
        IF k IS NULL THEN
            RETURN QUERY SELECT * FROM mend_push_each(
                p_spaces, p_devices, p_device_seqs, p_payloads, p_quotas, p_total);
            RETURN;
        END IF;
        len := length(p_payloads[i]);
        IF useds[k] + len > p_quotas[i] OR total + added + len > p_total THEN
            RETURN QUERY SELECT * FROM mend_push_each(
                p_spaces, p_devices, p_device_seqs, p_payloads, p_quotas, p_total);
            RETURN;
        END IF;
        row_ids[i] := ids[k];
        row_seqs[i] := nexts[k];
        useds[k] := useds[k] + len;
        row_useds[i] := useds[k];
        nexts[k] := nexts[k] + 1;
        added := added + len;
    END LOOP;
    INSERT INTO chunks (space, seq, device_id, device_seq, payload, payload_hash)
    SELECT u.space, u.seq, u.device_id, u.device_seq, u.payload, sha256(u.payload)
      FROM unnest(row_ids, row_seqs, p_devices, p_device_seqs, p_payloads)
           AS u(space, seq, device_id, device_seq, payload)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS stored = ROW_COUNT;
    IF stored <> n THEN
        -- A replay (of an earlier batch or within this one). The spaces are still locked by
        -- this transaction, so every row at or past a space's first planned sequence is one
        -- this INSERT just wrote: take them back and answer push by push.
        DELETE FROM chunks c
         USING unnest(ids, firsts) AS f(id, first_seq)
         WHERE c.space = f.id AND c.seq >= f.first_seq;
        RETURN QUERY SELECT * FROM mend_push_each(
            p_spaces, p_devices, p_device_seqs, p_payloads, p_quotas, p_total);
        RETURN;
    END IF;
    UPDATE spaces s SET next_seq = u.next_seq, bytes_used = u.bytes_used
      FROM unnest(ids, nexts, useds) AS u(id, next_seq, bytes_used)
     WHERE s.id = u.id AND (s.next_seq, s.bytes_used) IS DISTINCT FROM (u.next_seq, u.bytes_used);
    IF added <> 0 THEN
        UPDATE relay_usage SET bytes_used = bytes_used + added
         WHERE shard = (SELECT floor(random() * 64)::smallint);
    END IF;
    RETURN QUERY SELECT 0::smallint, s.seq, s.used
      FROM unnest(row_seqs, row_useds) WITH ORDINALITY AS s(seq, used, i)
     ORDER BY s.i;
END;
$$;
