//! ESMTP service extensions by their EHLO keywords (RFC 5321 4.1.1.1, 2.2.2): what our EHLO
//! reply offers and what the delivery client looks for in a next hop's, named once.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    /// RFC 2920.
    Pipelining,
    /// RFC 1870.
    Size,
    /// RFC 6152.
    EightBitMime,
    /// RFC 6531.
    SmtpUtf8,
    /// RFC 2034.
    EnhancedStatusCodes,
    /// RFC 3207.
    StartTls,
    /// RFC 4954.
    Auth,
    /// RFC 3030.
    Chunking,
    /// RFC 3461.
    Dsn,
    /// RFC 1985.
    Etrn,
    /// RFC 8689.
    RequireTls,
    /// RFC 2645.
    Atrn,
    /// RFC 5321 4.1.1.8.
    Help,
}

impl Extension {
    pub fn keyword(self) -> &'static str {
        match self {
            Extension::Pipelining => "PIPELINING",
            Extension::Size => "SIZE",
            Extension::EightBitMime => "8BITMIME",
            Extension::SmtpUtf8 => "SMTPUTF8",
            Extension::EnhancedStatusCodes => "ENHANCEDSTATUSCODES",
            Extension::StartTls => "STARTTLS",
            Extension::Auth => "AUTH",
            Extension::Chunking => "CHUNKING",
            Extension::Dsn => "DSN",
            Extension::Etrn => "ETRN",
            Extension::RequireTls => "REQUIRETLS",
            Extension::Atrn => "ATRN",
            Extension::Help => "HELP",
        }
    }
}
