-- Version 7: whether a refused chunk waiting to be healed came from a device whose chunks this
-- replica had already opened and merged (a real device: its edit must come back through a
-- snapshot, never be given up), not only from an id never seen (garbage).
ALTER TABLE sync_state ADD COLUMN heal_real INTEGER NOT NULL DEFAULT 0;
-- Devices whose chunks opened here (or that a snapshot vouches for): a refused chunk from one
-- of them is real. Rows from before count as opened: they were merged.
ALTER TABLE peer_seqs ADD COLUMN authentic INTEGER NOT NULL DEFAULT 1;
