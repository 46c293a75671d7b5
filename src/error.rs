//! The one error type of the program: what went wrong, said for an operator,
//! and which exit code (DESIGN.md contract) it maps to.

use std::fmt;

/// Exit codes shared by every subcommand.
pub mod exit {
    pub const OK: i32 = 0;
    pub const RUNTIME: i32 = 1;
    pub const BAD_INPUT: i32 = 2;
    pub const NOT_IN_SYNC: i32 = 3;
}

/// Why a command failed: refused input (nothing was changed) or a runtime failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input (flags, env, config file) is invalid; exit 2, nothing touched.
    BadInput(Vec<String>),
    /// Something outside our control failed (permission, kernel); exit 1.
    Runtime(String),
    /// A firewall tool is not installed (the message names the package); exit 1.
    /// A backend whose tool is missing holds nothing of ours.
    MissingTool(String),
    /// The kernel refused us for lack of privilege (root or CAP_NET_ADMIN);
    /// exit 1, and waiting does not help (the daemon stops at once).
    Privilege(String),
    /// Another process holds the firewall (the xtables lock, a busy object);
    /// exit 1, and a later try may work (the daemon retries).
    Busy(String),
}

impl Error {
    pub fn bad_input(msg: impl Into<String>) -> Error {
        Error::BadInput(vec![msg.into()])
    }

    pub fn runtime(msg: impl Into<String>) -> Error {
        Error::Runtime(msg.into())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::BadInput(_) => exit::BAD_INPUT,
            Error::Runtime(_) | Error::MissingTool(_) | Error::Privilege(_) | Error::Busy(_) => exit::RUNTIME,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadInput(problems) if problems.len() == 1 => {
                write!(f, "invalid input, nothing was changed: {}", problems[0])
            }
            Error::BadInput(problems) => {
                writeln!(f, "invalid input, nothing was changed:")?;
                for (i, p) in problems.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "  - {p}")?;
                }
                Ok(())
            }
            Error::Runtime(msg) | Error::MissingTool(msg) | Error::Privilege(msg) | Error::Busy(msg) => {
                write!(f, "{msg}")
            }
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
