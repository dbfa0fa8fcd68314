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
    space       bigint NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
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
    space       bigint PRIMARY KEY REFERENCES spaces (id) ON DELETE CASCADE,
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

-- A batch of pushes in one statement and one transaction (group commit across a batch).
-- Spaces are locked in id order first, so batches from several instances never deadlock.
-- One row per push, in input order: status 0 stored, 1 duplicate, 2 no such space,
-- 3 over quota (then `used` is the space's bytes). One NOTIFY per space touched carries the
-- space's new head, never a payload.
CREATE FUNCTION mend_push(
    p_spaces bytea[], p_devices bytea[], p_device_seqs bigint[], p_payloads bytea[],
    p_quotas bigint[]
) RETURNS TABLE (status smallint, relay_seq bigint, used bigint)
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    sp record;
    dup bigint;
    len bigint;
BEGIN
    PERFORM 1 FROM spaces WHERE space_id = ANY (p_spaces) ORDER BY id FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_spaces, 1), 0) LOOP
        SELECT s.id, s.next_seq, s.bytes_used INTO sp FROM spaces s WHERE s.space_id = p_spaces[i];
        IF NOT FOUND THEN
            status := 2; relay_seq := 0; used := 0;
            RETURN NEXT;
            CONTINUE;
        END IF;
        len := length(p_payloads[i]);
        IF sp.bytes_used + len > p_quotas[i] THEN
            SELECT c.seq INTO dup FROM chunks c
             WHERE c.space = sp.id AND c.device_id = p_devices[i] AND c.device_seq = p_device_seqs[i];
            IF FOUND THEN
                status := 1; relay_seq := dup; used := sp.bytes_used;
            ELSE
                status := 3; relay_seq := 0; used := sp.bytes_used;
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;
        INSERT INTO chunks (space, seq, device_id, device_seq, payload)
        VALUES (sp.id, sp.next_seq, p_devices[i], p_device_seqs[i], p_payloads[i])
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            UPDATE spaces SET next_seq = next_seq + 1, bytes_used = bytes_used + len
             WHERE id = sp.id;
            status := 0; relay_seq := sp.next_seq; used := sp.bytes_used + len;
        ELSE
            SELECT c.seq INTO dup FROM chunks c
             WHERE c.space = sp.id AND c.device_id = p_devices[i] AND c.device_seq = p_device_seqs[i];
            status := 1; relay_seq := dup; used := sp.bytes_used;
        END IF;
        RETURN NEXT;
    END LOOP;
    PERFORM pg_notify('mend_live', 'c ' || encode(s.space_id, 'hex') || ' ' || (s.next_seq - 1))
       FROM spaces s WHERE s.space_id = ANY (p_spaces);
END;
$$;
