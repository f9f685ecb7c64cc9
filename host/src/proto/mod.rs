//! The SMTP protocol core: command parsing, replies and content receivers. No I/O here, no
//! tokio: the session (`crate::session`) feeds bytes in and writes replies out.

pub mod address;
pub mod command;
pub mod data;
pub mod extension;
pub mod header;
pub mod line;
pub mod params;
pub mod replies;
pub mod reply;

pub use address::Mailbox;
pub use command::{Command, RcptPath};
pub use extension::Extension;
pub use params::{MailParams, RcptParams};
pub use reply::{EnhancedCode, Reply};
