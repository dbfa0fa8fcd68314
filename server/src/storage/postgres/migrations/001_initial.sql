-- The relay's tables in PostgreSQL: the same model as the SQLite backend. Several relay
-- instances share these tables; the `spaces` row of a space is the lock that keeps its relay
-- sequences gap-free, so every write to a space locks that row first.
CREATE TABLE spaces (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    space_id    bytea  NOT NULL UNIQUE,        -- 32 bytes
    token_hash  bytea  NOT NULL,               -- SHA-256 of the bearer token
    next_seq    bigint NOT NULL,               -- next relay sequence to assign (head + 1)
    bytes_used  bigint NOT NULL,               -- live chunk payloads + snapshot payload
    covers      bigint NOT NULL,               -- relay sequence the snapshot covers (0: none)
    created_at  bigint NOT NULL                -- unix seconds
);

-- The log. A pruned chunk keeps its row with a NULL payload, so a replayed push of it is still
-- answered with its original relay sequence.
CREATE TABLE chunks (
    space       bigint NOT NULL,               -- spaces.id (no foreign key: a per-row check
                                               -- would cost every push; erase deletes rows)
    seq         bigint NOT NULL,               -- relay sequence
    device_id   bytea  NOT NULL,               -- 16 bytes
    device_seq  bigint NOT NULL,               -- stored bit for bit, so all of u64 fits
    payload     bytea,                         -- NULL once pruned
    PRIMARY KEY (space, seq)
);
CREATE UNIQUE INDEX chunks_by_device ON chunks (space, device_id, device_seq);
-- Payloads are encrypted and padded: compressing them only costs CPU.
ALTER TABLE chunks ALTER COLUMN payload SET STORAGE EXTERNAL;

-- At most one snapshot per space.
CREATE TABLE snapshots (
    space       bigint PRIMARY KEY,            -- spaces.id
    covers      bigint NOT NULL,
    payload     bytea  NOT NULL
);
ALTER TABLE snapshots ALTER COLUMN payload SET STORAGE EXTERNAL;

-- Erased spaces stay erased (see the SQLite backend's 002_erased.sql).
CREATE TABLE erased (
    space_id    bytea  PRIMARY KEY,
    erased_at   bigint NOT NULL
);

-- Space creations per client address and time window, shared by every instance so the
-- creation rate limit holds however a load balancer spreads one address.
CREATE TABLE creations (
    client      bytea  NOT NULL,               -- a keyed hash of the address, never the address
    window_start bigint NOT NULL,              -- unix seconds
    count       integer NOT NULL,
    PRIMARY KEY (client, window_start)
);
CREATE INDEX creations_by_window ON creations (window_start);

-- A batch of pushes in one statement and one transaction (group commit across a batch).
-- Spaces are locked in id order first, so batches from several instances never deadlock.
-- One row per push, in input order: status 0 stored, 1 duplicate, 2 no such space,
-- 3 over quota (then `used` is the space's bytes). It does not NOTIFY: PostgreSQL holds a
-- database-wide lock from a notifying commit until its WAL is flushed, which would serialise
-- every batch's fsync. The relay notifies right after, in a transaction of its own.
CREATE FUNCTION mend_push(
    p_spaces bytea[], p_devices bytea[], p_device_seqs bigint[], p_payloads bytea[],
    p_quotas bigint[]
) RETURNS TABLE (status smallint, relay_seq bigint, used bigint)
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    k integer;
    dup bigint;
    len bigint;
    sids bytea[];
    ids bigint[];
    nexts bigint[];
    useds bigint[];
BEGIN
    -- Lock and read every space of the batch at once; counters are kept in these arrays and
    -- written back once per space at the end, not once per push.
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
        IF useds[k] + len > p_quotas[i] THEN
            SELECT c.seq INTO dup FROM chunks c
             WHERE c.space = ids[k] AND c.device_id = p_devices[i]
               AND c.device_seq = p_device_seqs[i];
            IF FOUND THEN
                status := 1; relay_seq := dup; used := useds[k];
            ELSE
                status := 3; relay_seq := 0; used := useds[k];
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;
        INSERT INTO chunks (space, seq, device_id, device_seq, payload)
        VALUES (ids[k], nexts[k], p_devices[i], p_device_seqs[i], p_payloads[i])
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            status := 0; relay_seq := nexts[k]; used := useds[k] + len;
            nexts[k] := nexts[k] + 1;
            useds[k] := useds[k] + len;
        ELSE
            SELECT c.seq INTO dup FROM chunks c
             WHERE c.space = ids[k] AND c.device_id = p_devices[i]
               AND c.device_seq = p_device_seqs[i];
            status := 1; relay_seq := dup; used := useds[k];
        END IF;
        RETURN NEXT;
    END LOOP;
    UPDATE spaces s SET next_seq = u.next_seq, bytes_used = u.bytes_used
      FROM unnest(ids, nexts, useds) AS u(id, next_seq, bytes_used)
     WHERE s.id = u.id AND (s.next_seq, s.bytes_used) IS DISTINCT FROM (u.next_seq, u.bytes_used);
END;
$$;
