"""The MistralModel API: pydantic models of spec and status, the source of the CRD schema."""
