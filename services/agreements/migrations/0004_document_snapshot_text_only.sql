-- The shared-agreement read model keeps the agreement's snapshot once, as text (`state`, which
-- keeps the order of each part's entries): its jsonb copy is no longer written, and rows the
-- projection writes again lose theirs. The previous release reads `coalesce(state, snapshot::text)`
-- and writes both, so it still runs on this schema; the column is dropped a release later.
ALTER TABLE agreement_documents ALTER COLUMN snapshot DROP NOT NULL;
