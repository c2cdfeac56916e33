//! Unit tests of the storage internals; behaviour tests live in
//! `tests/filestorage_*.rs`.
