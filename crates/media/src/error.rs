//! The one error type of this crate.

use thiserror::Error;

/// Why a piece of media could not be parsed or built.
///
/// Every variant names the structure (`what`) so that a listener can log it; none of them
/// carries payload bytes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MediaError {
    /// The input ended before the structure did.
    #[error("{what}: truncated (need {needed} more bytes, have {available})")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Bytes still needed at the point of failure.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// A length or count is above the bound this crate accepts or the format can express.
    #[error("{what}: {len} exceeds the limit of {max}")]
    TooLarge {
        /// The structure being read or built.
        what: &'static str,
        /// The length or count found.
        len: usize,
        /// The largest accepted value.
        max: usize,
    },
    /// The bytes break a rule of the format.
    #[error("{what}: invalid ({reason})")]
    Invalid {
        /// The structure being read or built.
        what: &'static str,
        /// The rule that was broken.
        reason: &'static str,
    },
    /// The input is well formed but uses a feature this crate does not handle.
    #[error("{what}: unsupported value {value}")]
    Unsupported {
        /// The field that holds the value.
        what: &'static str,
        /// The value found.
        value: u32,
    },
}
