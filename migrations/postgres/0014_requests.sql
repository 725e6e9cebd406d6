-- Document requests: an agent asks a customer for files. Twin of the
-- sqlite backend's 0014_requests.sql (schema_parity.rs). The request is a
-- delivery like a message (its link, verification and expiry), whose
-- sealed message holds the instructions and the checklist; this row holds
-- only what the upload checks need and whether it was submitted.
CREATE TABLE requests (
    message_id     TEXT PRIMARY KEY REFERENCES messages(id),
    -- How many checklist items (their names are sealed).
    items          BIGINT NOT NULL,
    -- Accepted file kinds, comma-separated (filetype names).
    accepted       TEXT NOT NULL,
    -- The largest submission, in bytes.
    max_bytes      BIGINT NOT NULL,
    -- Set once, by compare-and-set: the link takes no upload after it.
    submitted_at   BIGINT,
    -- The incoming item the submission became (set in the same transaction
    -- as its sealed message, which the incoming row references).
    submission_id  TEXT
);

-- Whether a delivery is a request: the landing page, the customer's page
-- and a new link's email word it so without another query.
ALTER TABLE deliveries ADD COLUMN is_request BIGINT NOT NULL DEFAULT 0;
