//! What a plugin asks for through `edit` (0.2.3) during one hook, as the host keeps it:
//! plain data, checked by `edit` when asked for and applied by `crate::changes`.

use crate::proto::{MailParams, Mailbox};
use crate::spool::{Content, Incoming, Recipient, Spool};

/// Most edits (not counting body chunks) one hook may ask for.
pub const MAX_EDITS: usize = 1000;
/// Most octets of header fields and reply text one hook may ask for.
pub const MAX_EDIT_OCTETS: usize = 64 * 1024;

/// One change a plugin asked for (besides those of its `data-result`).
#[derive(Debug, Clone)]
pub enum Edit {
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// `value` `None`: delete the occurrence (1-based).
    ChangeHeader {
        name: String,
        occurrence: u32,
        value: Option<String>,
    },
    SetSender {
        sender: Option<Mailbox>,
        params: MailParams,
    },
    AddRecipient(Recipient),
}

/// Where a data hook's new body goes, and the bounds of its edits.
#[derive(Clone)]
pub struct EditTarget {
    pub spool: Spool,
    pub min_free: u64,
    /// `limits.message_size`, less the header section the body goes under.
    pub max_body: u64,
    pub max_recipients: usize,
}

/// A new body as written so far: its parts in the spool (held while this lives).
pub struct NewBody {
    pub(super) incoming: Incoming,
    pub(super) len: u64,
    /// The text so far ends with a CR: an LF follows it, in the next part or at the end.
    pub(super) cr: bool,
}

impl NewBody {
    /// The body written, once the hook is over; an error when a part could not be
    /// written (the message is then refused, as one the spool could not take).
    pub async fn finish(mut self) -> std::io::Result<(Content, Incoming)> {
        if self.cr {
            self.incoming.block().push(b'\n');
            self.len += 1;
        }
        let content = self.incoming.finish().await?;
        Ok((content, self.incoming))
    }

    /// Octets written so far.
    pub fn written(&self) -> u64 {
        self.len
    }
}

/// What a plugin asked for during one hook.
#[derive(Default)]
pub struct Edits {
    pub edits: Vec<Edit>,
    pub body: Option<NewBody>,
    /// A part of the new body went past the limit: none of it is used.
    pub(super) body_refused: bool,
    /// The reply's text, one element a line.
    pub reply: Option<Vec<String>>,
    octets: usize,
    pub(super) recipients: usize,
}

/// The edits of the call in progress: `target` only at `on-data`.
pub(super) struct Scope {
    pub target: Option<EditTarget>,
    pub edits: Edits,
}

impl Edits {
    /// Counts one more edit of `octets` against the hook's bounds; `Err`: which bound.
    pub(super) fn count(&mut self, octets: usize) -> Result<(), String> {
        if self.edits.len() >= MAX_EDITS {
            return Err(format!("more than {MAX_EDITS} edits"));
        }
        if self.octets + octets > MAX_EDIT_OCTETS {
            return Err(format!("more than {MAX_EDIT_OCTETS} octets of edits"));
        }
        self.octets += octets;
        Ok(())
    }
}
