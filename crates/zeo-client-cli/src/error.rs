//! The command's one error type: each becomes a single line on stderr and
//! a non-zero exit status.

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The client or the server said no.
    #[error(transparent)]
    Client(#[from] zeo_client::Error),

    /// A bad argument value that clap could not check.
    #[error("{0}")]
    Usage(String),

    /// The command did not finish within `--timeout`.
    #[error("no answer within {0:.1} s")]
    Timeout(f64),

    /// Writing the output failed (a closed pipe, a full disk).
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),

    /// A record could not be decoded.
    #[error("{0}")]
    Record(String),

    /// The benchmark could not run as asked.
    #[error("bench: {0}")]
    Bench(String),
}

impl From<zeo_storage::Error> for CliError {
    fn from(e: zeo_storage::Error) -> Self {
        CliError::Client(e.into())
    }
}
