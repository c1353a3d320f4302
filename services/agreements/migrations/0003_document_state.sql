-- What the shared-agreement projection restores an agreement from, instead of replaying its
-- stream: the snapshot as JSON text, each part's entries in the agreement's own order (jsonb
-- keeps no order of keys, and the escalation matrix lists contacts in it), and the shape of the
-- state it was taken in (`state_format()`). A document of another shape, or of none (written
-- before), is replayed from its stream once.
ALTER TABLE agreement_documents ADD COLUMN state text, ADD COLUMN state_format text NOT NULL DEFAULT '';
