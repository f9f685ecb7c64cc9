//! 8-bit to 7-bit conversion for a next hop without 8BITMIME (RFC 6152 3: "convert the
//! message to 7 bit"): every MIME entity whose body has 8-bit octets gets a
//! quoted-printable body (RFC 2045 6.7) and `Content-Transfer-Encoding: quoted-printable`;
//! multiparts are walked part by part, an attached message/rfc822 as the message it holds.
//! What cannot be converted is refused: 8-bit octets in a header, or inside another
//! message/* entity (RFC 2046 5.2 allows it no encoding), or in a body already encoded.
//!
//! The message is never whole in memory: it streams from the spool through the MIME parser
//! (`mime`) three times. The first pass learns which entities have 8-bit octets (whether a
//! part needs converting is known only at its end); the second measures the result (the
//! size a `SIZE=` parameter or a `BDAT` chunk gives); the third converts as it sends.

mod mime;
mod qp;

use crate::spool::{Blocks, Content};
use bytes::Bytes;
use mime::{Event, Kind, Parser};
use std::io;

/// Why a message cannot be made 7-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unconvertible {
    EightBitHeader,
    EightBitMessagePart,
    BadMultipart,
    TooDeep,
    TooManyParts,
    HeaderTooLong,
    EightBitEncodedPart,
}

impl std::fmt::Display for Unconvertible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unconvertible::EightBitHeader => f.write_str("8-bit octets in a header field"),
            Unconvertible::EightBitMessagePart => {
                f.write_str("8-bit octets in a message/* part other than message/rfc822")
            }
            Unconvertible::BadMultipart => f.write_str("a multipart without its boundary"),
            Unconvertible::TooDeep => {
                write!(f, "multiparts nested deeper than {}", mime::MAX_DEPTH)
            }
            Unconvertible::TooManyParts => write!(f, "more than {} MIME parts", mime::MAX_ENTITIES),
            Unconvertible::HeaderTooLong => f.write_str("a MIME part's header too long to read"),
            Unconvertible::EightBitEncodedPart => {
                f.write_str("8-bit octets in a part encoded as quoted-printable or base64")
            }
        }
    }
}

const CTE: &str = "content-transfer-encoding";

fn has_8bit(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b >= 0x80)
}

/// Whether any octet of the content is 8-bit, read block by block.
async fn content_has_8bit(content: &Content) -> io::Result<bool> {
    let mut blocks = content.blocks();
    while let Some(block) = blocks.next().await? {
        if has_8bit(&block) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What the first pass learns of an entity.
struct Info {
    parent: Option<usize>,
    kind: Kind,
    header8: bool,
    /// 8-bit octets anywhere in its body (its parts' headers included).
    body8: bool,
    preamble8: bool,
    epilogue8: bool,
    /// A multipart whose close delimiter line came.
    closed: bool,
}

/// The first pass: what each entity holds.
struct Scan {
    infos: Vec<Info>,
    parser: Parser,
}

impl Scan {
    fn new() -> Scan {
        let mut infos = Vec::new();
        let parser = Parser::new(&mut |e| Plan::scan_event(&mut infos, e));
        Scan { infos, parser }
    }

    fn feed(&mut self, block: &[u8]) -> Result<(), Unconvertible> {
        let infos = &mut self.infos;
        self.parser.feed(block, &mut |e| Plan::scan_event(infos, e))
    }

    fn finish(mut self) -> Result<Plan, Unconvertible> {
        let infos = &mut self.infos;
        self.parser.finish(&mut |e| Plan::scan_event(infos, e))?;
        Plan::decide(self.infos)
    }
}

/// Which entities are converted (the others go as they are), from the first pass.
pub struct Plan {
    infos: Vec<Info>,
    convert: Vec<bool>,
}

impl Plan {
    fn scan_event(infos: &mut Vec<Info>, event: Event) {
        match event {
            Event::Start { id, parent } => infos.insert(
                id,
                Info {
                    parent,
                    kind: Kind::Leaf,
                    header8: false,
                    body8: false,
                    preamble8: false,
                    epilogue8: false,
                    closed: false,
                },
            ),
            Event::HeaderLine { id, bytes } => infos[id].header8 |= has_8bit(bytes),
            Event::HeaderEnd { id, kind, .. } => infos[id].kind = kind,
            Event::Body { id, bytes, .. } => infos[id].body8 |= has_8bit(bytes),
            Event::Outside { id, bytes } => {
                let info = &mut infos[id];
                let eight = has_8bit(bytes);
                if info.closed {
                    info.epilogue8 |= eight;
                } else {
                    info.preamble8 |= eight;
                }
                info.body8 |= eight;
            }
            Event::Delimiter { id, bytes, close } => {
                infos[id].body8 |= has_8bit(bytes);
                infos[id].closed |= close;
            }
            Event::End { id } => {
                let (eight, parent) = (infos[id].header8 || infos[id].body8, infos[id].parent);
                if let Some(p) = parent {
                    infos[p].body8 |= eight;
                }
            }
        }
    }

    /// The first pass, as the content streams from the spool.
    async fn scan(content: &Content) -> io::Result<Result<Plan, Unconvertible>> {
        let mut scan = Scan::new();
        let mut blocks = content.blocks();
        while let Some(block) = blocks.next().await? {
            if let Err(e) = scan.feed(&block) {
                return Ok(Err(e));
            }
        }
        Ok(scan.finish())
    }

    /// Which entities are converted. An entity is looked at when it is the message or a
    /// part of a converted multipart.
    fn decide(infos: Vec<Info>) -> Result<Plan, Unconvertible> {
        let mut convert = vec![false; infos.len()];
        for (id, info) in infos.iter().enumerate() {
            if !info.parent.is_none_or(|p| convert[p]) {
                continue;
            }
            if info.header8 {
                return Err(Unconvertible::EightBitHeader);
            }
            if !info.body8 {
                continue;
            }
            convert[id] = match info.kind {
                Kind::Leaf => true,
                Kind::Multipart if info.closed => true,
                Kind::Rfc822 => true,
                Kind::Multipart | Kind::NoBoundary => return Err(Unconvertible::BadMultipart),
                Kind::Message => return Err(Unconvertible::EightBitMessagePart),
                Kind::TooDeep => return Err(Unconvertible::TooDeep),
                Kind::HeaderTooLong => return Err(Unconvertible::HeaderTooLong),
                Kind::Encoded => return Err(Unconvertible::EightBitEncodedPart),
            };
        }
        Ok(Plan { infos, convert })
    }
}

/// The converting pass: each line as it is, or converted, or dropped (an 8-bit preamble
/// or epilogue of a converted multipart: it is for readers without MIME).
struct Emitter<'p> {
    plan: &'p Plan,
    qp: qp::Encoder,
    closed: Vec<bool>,
}

/// The converting pass over a content, block by block.
struct Convert<'p> {
    /// Until the end of the content.
    parser: Option<Parser>,
    emitter: Emitter<'p>,
}

impl<'p> Convert<'p> {
    fn new(plan: &'p Plan) -> Convert<'p> {
        let mut emitter = Emitter {
            plan,
            qp: qp::Encoder::default(),
            closed: vec![false; plan.infos.len()],
        };
        let parser = Parser::new(&mut |e| emitter.event(e, &mut Vec::new()));
        Convert {
            parser: Some(parser),
            emitter,
        }
    }

    /// The converted form of the next block (`None`: the end, after which it is done).
    /// The first pass went through this same content without a refusal, so none comes.
    fn feed(&mut self, block: Option<&[u8]>, out: &mut Vec<u8>) -> io::Result<()> {
        let emitter = &mut self.emitter;
        let mut sink = |e: Event| emitter.event(e, out);
        let fed = match (block, self.parser.as_mut()) {
            (_, None) => Ok(()),
            (Some(block), Some(parser)) => parser.feed(block, &mut sink),
            (None, Some(_)) => self.parser.take().expect("checked").finish(&mut sink),
        };
        fed.map_err(|e| io::Error::other(format!("cannot convert to 7 bit: {e}")))
    }

    fn done(&self) -> bool {
        self.parser.is_none()
    }
}

impl Emitter<'_> {
    fn event(&mut self, event: Event, out: &mut Vec<u8>) {
        let plan = self.plan;
        match event {
            Event::Start { .. } => {}
            Event::HeaderLine { id, bytes } => {
                if !plan.convert[id] {
                    out.extend_from_slice(bytes);
                }
            }
            Event::HeaderEnd {
                id,
                header,
                kind,
                blank,
            } => {
                if plan.convert[id] {
                    let header = header.unwrap_or_default();
                    // A converted multipart is 7-bit now (RFC 2045 6.4: its label is 7bit,
                    // 8bit or binary).
                    let label = match kind {
                        Kind::Leaf => Some("quoted-printable"),
                        _ => mime::field(header, CTE).map(|_| "7bit"),
                    };
                    match label {
                        Some(label) => {
                            mime::without_field(header, CTE, out);
                            out.extend_from_slice(
                                format!("Content-Transfer-Encoding: {label}\r\n").as_bytes(),
                            );
                        }
                        None => out.extend_from_slice(header),
                    }
                    self.qp = qp::Encoder::default();
                }
                out.extend_from_slice(blank);
            }
            Event::Body { id, bytes, end } => {
                if plan.convert[id] {
                    self.qp.piece(bytes, end, out);
                } else {
                    out.extend_from_slice(bytes);
                }
            }
            Event::Outside { id, bytes } => {
                let info = &plan.infos[id];
                let eight = if self.closed[id] {
                    info.epilogue8
                } else {
                    info.preamble8
                };
                if !(plan.convert[id] && eight) {
                    out.extend_from_slice(bytes);
                }
            }
            Event::Delimiter { id, bytes, close } => {
                out.extend_from_slice(bytes);
                self.closed[id] |= close;
            }
            Event::End { id } => {
                if plan.convert[id] && plan.infos[id].kind == Kind::Leaf {
                    self.qp.finish(out);
                }
            }
        }
    }
}

/// What delivery sends of a message: the content as spooled, or converted to 7 bit.
pub enum Outbound<'a> {
    Spooled(&'a Content),
    SevenBit {
        content: &'a Content,
        plan: Plan,
        len: u64,
    },
}

impl<'a> Outbound<'a> {
    /// For a hop that takes 8-bit content (`eight_bit`) or not.
    pub async fn for_hop(
        content: &'a Content,
        eight_bit: bool,
    ) -> io::Result<Result<Outbound<'a>, Unconvertible>> {
        if eight_bit || !content_has_8bit(content).await? {
            return Ok(Ok(Outbound::Spooled(content)));
        }
        let plan = match Plan::scan(content).await? {
            Ok(plan) => plan,
            Err(e) => return Ok(Err(e)),
        };
        let mut out = Outbound::SevenBit {
            content,
            plan,
            len: 0,
        };
        let mut len = 0;
        let mut blocks = out.blocks();
        while let Some(block) = blocks.next().await? {
            len += block.len() as u64;
        }
        if let Outbound::SevenBit { len: l, .. } = &mut out {
            *l = len;
        }
        Ok(Ok(out))
    }

    /// Octets, as sent.
    pub fn len(&self) -> u64 {
        match self {
            Outbound::Spooled(content) => content.len(),
            Outbound::SevenBit { len, .. } => *len,
        }
    }

    pub fn blocks(&self) -> OutboundBlocks<'_> {
        match self {
            Outbound::Spooled(content) => OutboundBlocks {
                blocks: content.blocks(),
                convert: None,
            },
            Outbound::SevenBit { content, plan, .. } => OutboundBlocks {
                blocks: content.blocks(),
                convert: Some(Convert::new(plan)),
            },
        }
    }
}

/// An outbound message read in order, in blocks.
pub struct OutboundBlocks<'p> {
    blocks: Blocks,
    convert: Option<Convert<'p>>,
}

impl OutboundBlocks<'_> {
    pub async fn next(&mut self) -> io::Result<Option<Bytes>> {
        let Some(convert) = &mut self.convert else {
            return self.blocks.next().await;
        };
        while !convert.done() {
            let mut out = Vec::new();
            let block = self.blocks.next().await?;
            convert.feed(block.as_deref(), &mut out)?;
            if !out.is_empty() {
                return Ok(Some(out.into()));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
