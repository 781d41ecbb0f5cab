//! AWS adapters (placeholder until written).
