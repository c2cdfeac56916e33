//! What one decoded message may cost: nesting depth and memory.
//!
//! A peer controls every byte of a message, so decoding is bounded in two
//! ways besides the frame size limit:
//!
//! * **Depth.** A [`Value`](zeo_pickle::Value) is a tree, and dropping,
//!   cloning, comparing, printing or normalizing one recurses once per
//!   level. ZEO messages nest a handful of levels (the message tuple, its
//!   arguments, a list of records, a dict, an exception's state), so every
//!   decoder here refuses values nested deeper than [`MAX_MESSAGE_DEPTH`].
//!   The decoders and encoders keep their own stacks; at 64 levels all of
//!   those recursions together fit in a 128 KiB thread stack even in an
//!   unoptimized build (`tests/hostile.rs`), a small part of the 2 MiB a
//!   runtime worker thread gets.
//! * **Memory.** The value built from a message is charged as
//!   `size_of::<Value>()` per node plus its string and byte payloads. For
//!   plain data (the direct pickle reader and msgpack: no shared objects)
//!   the budget is [`MESSAGE_BUDGET_BASE`] plus [`PLAIN_BYTES_PER_INPUT_BYTE`]
//!   per input byte, which covers the real messages (a list of 8-byte oids
//!   costs under 6 bytes per input byte) while stopping a frame of one-byte
//!   `None`s from costing fifty times its size. Pickles that need the generic
//!   decoder (memo references, globals, dicts) share objects, which a tree
//!   can only copy, so there the decoder's working memory and its output
//!   each get [`MESSAGE_BUDGET_BASE`] plus one byte per input byte: a memo
//!   bomb costs at most about three times its size on top of the frame.
//!
//!   Those are a server's budgets, for requests from peers it does not
//!   trust. A client reads replies from the server it chose, and some are
//!   legitimately large trees of short strings (an `undoLog` or `history`
//!   of thousands of entries, dicts whose keys cost more as values than as
//!   bytes), so on the client side both budgets grow by
//!   [`CLIENT_BYTES_PER_INPUT_BYTE`] per input byte instead: memory stays
//!   proportional to a frame, which `max-message-size` bounds. What memo
//!   references copy is capped apart, on both sides, at
//!   [`MESSAGE_BUDGET_BASE`] plus one byte per input byte
//!   (`copy_budget`): ZEO peers pickle messages without a memo, so only
//!   an attacker's message makes copies, and a memo bomb costs at most
//!   about three times its size on top of the frame whichever side reads
//!   it.

use crate::pickle::Side;

/// Deepest nesting of a decoded message (the message tuple itself is level
/// one). See the module documentation for why 64.
pub const MAX_MESSAGE_DEPTH: usize = 64;

/// Fixed part of each memory budget a message decoder gets: 4 MiB, enough
/// for any ordinary reply whatever its shape.
pub const MESSAGE_BUDGET_BASE: usize = 4 << 20;

/// Per input byte part of the output budget for plain data (direct pickle
/// reader, msgpack).
pub const PLAIN_BYTES_PER_INPUT_BYTE: usize = 8;

/// Per input byte part of both budgets when a client decodes a reply.
pub const CLIENT_BYTES_PER_INPUT_BYTE: usize = 16;

/// Output budget of a plain-data decoder for an `input_len`-byte message
/// decoded by `side`.
pub(crate) fn plain_budget(input_len: usize, side: Side) -> usize {
    let per_byte = match side {
        Side::Server => PLAIN_BYTES_PER_INPUT_BYTE,
        Side::Client => CLIENT_BYTES_PER_INPUT_BYTE,
    };
    MESSAGE_BUDGET_BASE.saturating_add(input_len.saturating_mul(per_byte))
}

/// Working-memory and output budget (each) of the generic pickle decoder
/// for an `input_len`-byte message decoded by `side`.
pub(crate) fn shared_budget(input_len: usize, side: Side) -> usize {
    let per_byte = match side {
        Side::Server => 1,
        Side::Client => CLIENT_BYTES_PER_INPUT_BYTE,
    };
    MESSAGE_BUDGET_BASE.saturating_add(input_len.saturating_mul(per_byte))
}

/// Budget for the copies memo references make (see the module
/// documentation), either side.
pub(crate) fn copy_budget(input_len: usize) -> usize {
    MESSAGE_BUDGET_BASE.saturating_add(input_len)
}

/// What one value node costs against a budget, besides its payload.
pub(crate) const VALUE_COST: usize = std::mem::size_of::<zeo_pickle::Value>();
