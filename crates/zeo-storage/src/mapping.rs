//! In-memory storage (placeholder until implemented).
/// In-memory storage.
pub struct MappingStorage;
