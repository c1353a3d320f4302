-- A matter escalates again once its chain is closed: one row per occurrence of a matter.
ALTER TABLE escalations DROP CONSTRAINT escalations_matter_key;
ALTER TABLE escalations ADD COLUMN occurrence integer NOT NULL DEFAULT 1;
ALTER TABLE escalations ADD CONSTRAINT escalations_matter_occurrence_key UNIQUE (matter, occurrence);
