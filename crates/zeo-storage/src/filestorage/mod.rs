//! Data.fs storage (placeholder until implemented).
/// Data.fs storage.
pub struct FileStorage;
