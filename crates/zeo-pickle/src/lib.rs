//! Python pickles for ZODB records and ZEO messages.

pub mod value;

pub use value::Value;
