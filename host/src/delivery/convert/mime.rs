//! The MIME structure of a message (RFC 2045, RFC 2046 5.1), found line by line as the
//! content streams past: entities, their header sections, the parts of each multipart
//! between its delimiter lines. Nothing here holds more than one line (at most `LINE_MAX`;
//! a longer one comes in pieces) and one entity's header section (at most `HEADER_CAP`).

use super::Unconvertible;

/// Lines longer than this are handed on in pieces (never split between CR and LF).
const LINE_MAX: usize = 64 * 1024;
/// The most of a header section kept to read its fields: the message's own (the client's,
/// at most `HEADER_MAX`, with the fields we and plugins added), and a part's.
const HEADER_CAP: usize = 2 * crate::proto::header::HEADER_MAX;
const PART_HEADER_CAP: usize = 64 * 1024;
/// Multiparts nested deeper than this are not followed.
pub const MAX_DEPTH: usize = 20;
/// The most entities a message may have to be converted.
pub const MAX_ENTITIES: usize = 10_000;

/// What an entity's body is, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Leaf,
    Multipart,
    /// message/rfc822: it holds a message, an entity of its own (converted inside:
    /// RFC 2046 5.2.1 allows the message/rfc822 itself no encoding but 7bit, 8bit, binary).
    Rfc822,
    /// Another message/* (partial, external-body, global, ...): not converted.
    Message,
    /// A body labelled quoted-printable or base64 already: 8-bit octets in it are damage
    /// that encoding it again would not mend (its escapes would be escaped).
    Encoded,
    /// multipart/* without a boundary parameter.
    NoBoundary,
    /// A multipart deeper than `MAX_DEPTH`.
    TooDeep,
    /// A header section longer than its cap: its fields were not read.
    HeaderTooLong,
}

/// What the parser found, in the order of the message. Entities are numbered in order of
/// appearance; a part's number is larger than its multipart's.
pub enum Event<'a> {
    Start {
        id: usize,
        parent: Option<usize>,
    },
    /// A line (or piece) of `id`'s header section.
    HeaderLine {
        id: usize,
        bytes: &'a [u8],
    },
    /// `id`'s header section is complete: its fields (`None` when past the cap) and the
    /// empty line that ended it (empty when the entity ended without one).
    HeaderEnd {
        id: usize,
        header: Option<&'a [u8]>,
        kind: Kind,
        blank: &'a [u8],
    },
    /// A line (or piece) of a body that is not a multipart's.
    Body {
        id: usize,
        bytes: &'a [u8],
        end: bool,
    },
    /// A line of multipart `id` before its first delimiter line, or after its last.
    Outside {
        id: usize,
        bytes: &'a [u8],
    },
    /// A delimiter line of multipart `id`; `close`: the last one (`--boundary--`).
    Delimiter {
        id: usize,
        bytes: &'a [u8],
        close: bool,
    },
    End {
        id: usize,
    },
}

enum State {
    Header {
        buf: Vec<u8>,
        over: bool,
    },
    Body,
    /// A message/rfc822: the message it holds is open above it until it ends.
    Encapsulates,
    /// A multipart: `delimiter` is `--boundary` until the close delimiter line.
    Parts {
        delimiter: Option<Vec<u8>>,
    },
}

struct Open {
    id: usize,
    depth: usize,
    state: State,
}

pub struct Parser {
    stack: Vec<Open>,
    entities: usize,
    line: Vec<u8>,
    /// A piece of the current line went out already.
    in_line: bool,
}

impl Parser {
    pub fn new(sink: &mut impl FnMut(Event)) -> Parser {
        sink(Event::Start {
            id: 0,
            parent: None,
        });
        Parser {
            stack: vec![Open {
                id: 0,
                depth: 0,
                state: State::Header {
                    buf: Vec::new(),
                    over: false,
                },
            }],
            entities: 1,
            line: Vec::new(),
            in_line: false,
        }
    }

    /// The next block of the message.
    pub fn feed(
        &mut self,
        mut block: &[u8],
        sink: &mut impl FnMut(Event),
    ) -> Result<(), Unconvertible> {
        while !block.is_empty() {
            match memchr::memchr(b'\n', block) {
                Some(i) if self.line.is_empty() => {
                    self.dispatch(&block[..=i], true, sink)?;
                    block = &block[i + 1..];
                }
                Some(i) => {
                    let mut line = std::mem::take(&mut self.line);
                    line.extend_from_slice(&block[..=i]);
                    self.dispatch(&line, true, sink)?;
                    line.clear();
                    self.line = line;
                    block = &block[i + 1..];
                }
                None => {
                    self.line.extend_from_slice(block);
                    block = &[];
                    if self.line.len() > LINE_MAX {
                        let keep = usize::from(self.line.last() == Some(&b'\r'));
                        let piece: Vec<u8> = self.line.drain(..self.line.len() - keep).collect();
                        self.dispatch(&piece, false, sink)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The end of the message: a last line without its end, then every entity still open.
    pub fn finish(mut self, sink: &mut impl FnMut(Event)) -> Result<(), Unconvertible> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.dispatch(&line, false, sink)?;
        }
        self.close_above(0, sink);
        Ok(())
    }

    /// One line (`end`: with its line ending) or piece of one.
    fn dispatch(
        &mut self,
        bytes: &[u8],
        end: bool,
        sink: &mut impl FnMut(Event),
    ) -> Result<(), Unconvertible> {
        let whole = end && !self.in_line;
        self.in_line = !end;
        // A delimiter line ends what is open inside its multipart; an outer multipart's
        // delimiter comes first, as its parts are cut out before they are read.
        if whole
            && let Some((at, close)) =
                self.stack
                    .iter()
                    .enumerate()
                    .find_map(|(at, open)| match &open.state {
                        State::Parts { delimiter: Some(d) } => {
                            delimiter(bytes, d).map(|close| (at, close))
                        }
                        _ => None,
                    })
        {
            self.close_above(at + 1, sink);
            let parent = &mut self.stack[at];
            sink(Event::Delimiter {
                id: parent.id,
                bytes,
                close,
            });
            if close {
                parent.state = State::Parts { delimiter: None };
                return Ok(());
            }
            let (parent, depth) = (parent.id, parent.depth + 1);
            return self.start(parent, depth, sink);
        }
        let top = self.stack.last_mut().expect("the message stays open");
        let id = top.id;
        match &mut top.state {
            State::Header { buf, over } if whole && bytes == b"\r\n" => {
                let kind = if *over {
                    Kind::HeaderTooLong
                } else {
                    kind_of(buf, top.depth)
                };
                sink(Event::HeaderEnd {
                    id,
                    header: (!*over).then_some(&buf[..]),
                    kind,
                    blank: bytes,
                });
                top.state = match kind {
                    Kind::Multipart => State::Parts {
                        delimiter: boundary(buf).map(|b| [b"--", b.as_bytes()].concat()),
                    },
                    Kind::Rfc822 => State::Encapsulates,
                    _ => State::Body,
                };
                if kind == Kind::Rfc822 {
                    let depth = top.depth + 1;
                    return self.start(id, depth, sink);
                }
            }
            State::Header { buf, over } => {
                sink(Event::HeaderLine { id, bytes });
                let cap = if id == 0 { HEADER_CAP } else { PART_HEADER_CAP };
                if !*over && buf.len() + bytes.len() > cap {
                    *over = true;
                    *buf = Vec::new();
                } else if !*over {
                    buf.extend_from_slice(bytes);
                }
            }
            State::Body => sink(Event::Body { id, bytes, end }),
            State::Encapsulates => unreachable!("the encapsulated message is open above it"),
            State::Parts { .. } => sink(Event::Outside { id, bytes }),
        }
        Ok(())
    }

    /// Opens entity `parent`'s part (or encapsulated message) at `depth`.
    fn start(
        &mut self,
        parent: usize,
        depth: usize,
        sink: &mut impl FnMut(Event),
    ) -> Result<(), Unconvertible> {
        if self.entities == MAX_ENTITIES {
            return Err(Unconvertible::TooManyParts);
        }
        let id = self.entities;
        self.entities += 1;
        sink(Event::Start {
            id,
            parent: Some(parent),
        });
        self.stack.push(Open {
            id,
            depth,
            state: State::Header {
                buf: Vec::new(),
                over: false,
            },
        });
        Ok(())
    }

    /// Ends the entities open at `from` and deeper (a part at its multipart's next
    /// delimiter line, everything at the end of the message).
    fn close_above(&mut self, from: usize, sink: &mut impl FnMut(Event)) {
        while self.stack.len() > from {
            let open = self.stack.pop().expect("checked");
            if let State::Header { buf, over } = &open.state {
                sink(Event::HeaderEnd {
                    id: open.id,
                    header: (!*over).then_some(&buf[..]),
                    kind: Kind::Leaf,
                    blank: b"",
                });
            }
            sink(Event::End { id: open.id });
        }
    }
}

/// Whether `line` is a delimiter line of `delimiter` (RFC 2046 5.1.1: `--boundary`, then
/// `--` on the last, white space allowed after), and if so whether it is the last.
fn delimiter(line: &[u8], delimiter: &[u8]) -> Option<bool> {
    let bare = line.strip_suffix(b"\r\n")?.trim_ascii_end();
    match bare.strip_prefix(delimiter)? {
        b"" => Some(false),
        b"--" => Some(true),
        _ => None,
    }
}

fn kind_of(header: &[u8], depth: usize) -> Kind {
    let content_type = field(header, "content-type").unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media.starts_with("multipart/") {
        match parameter(&content_type, "boundary") {
            None => Kind::NoBoundary,
            Some(_) if depth >= MAX_DEPTH => Kind::TooDeep,
            Some(_) => Kind::Multipart,
        }
    } else if media == "message/rfc822" {
        if depth >= MAX_DEPTH {
            Kind::TooDeep
        } else {
            Kind::Rfc822
        }
    } else if media.starts_with("message/") {
        Kind::Message
    } else if field(header, "content-transfer-encoding").is_some_and(|e| {
        e.eq_ignore_ascii_case("quoted-printable") || e.eq_ignore_ascii_case("base64")
    }) {
        Kind::Encoded
    } else {
        Kind::Leaf
    }
}

fn boundary(header: &[u8]) -> Option<String> {
    parameter(&field(header, "content-type")?, "boundary")
}

/// The first field `name` of the header, unfolded.
pub fn field(header: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(header);
    let mut found: Option<String> = None;
    for line in text.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(value) = found.as_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if found.is_some() {
            break;
        } else if let Some((n, value)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            found = Some(value.trim().to_string());
        }
    }
    found
}

/// A parameter of a structured field such as `multipart/mixed; boundary="x"` (a `;` inside
/// quotes belongs to the value, RFC 2045 5.1).
fn parameter(value: &str, name: &str) -> Option<String> {
    let mut quoted = false;
    value
        .split(|c| {
            quoted ^= c == '"';
            c == ';' && !quoted
        })
        .skip(1)
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().trim_matches('"').to_string())
        })
}

/// The header without every occurrence of field `name` (continuation lines included).
pub fn without_field(header: &[u8], name: &str, out: &mut Vec<u8>) {
    let mut dropping = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            dropping = line
                .iter()
                .position(|&b| b == b':')
                .is_some_and(|c| line[..c].trim_ascii().eq_ignore_ascii_case(name.as_bytes()));
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
}
