-- Trailers of a stored response (a gRPC answer's grpc-status is one). Rows written before this
-- migration have NULL here and replay with no trailers.
ALTER TABLE idem_records
    ADD COLUMN IF NOT EXISTS response_trailer_names  text[],
    ADD COLUMN IF NOT EXISTS response_trailer_values bytea[];
