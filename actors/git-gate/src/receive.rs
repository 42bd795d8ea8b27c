//! The receive-pack request: ref update commands, capabilities, push options, pack.
//!
//! Hazard: every byte comes from the agent. Object ids must be 40 lowercase hex digits,
//! ref names must be ones git itself would accept (checked again by `update-ref`),
//! capabilities the gate did not advertise are refused rather than half-honoured, and a
//! request that updates a ref without a pack, or deletes one with a pack, is malformed.

use crate::pktline::{Packet, PktError, Reader};

/// The all-zero object id: "no object" (a create's old value, a delete's new value).
pub const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// What the gate advertises to a pushing client (and so the only ones it may ask for).
pub const CAPABILITIES: &str = "report-status delete-refs side-band-64k quiet atomic ofs-delta push-options object-format=sha1 agent=bottle-git-gate";

/// One ref update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The value the client saw (all zeros: create).
    pub old: String,
    /// The value to set (all zeros: delete).
    pub new: String,
    /// Full ref name.
    pub refname: String,
}

impl Command {
    /// Deletes the ref.
    pub fn is_delete(&self) -> bool {
        self.new == ZERO_ID
    }
    /// Creates the ref.
    pub fn is_create(&self) -> bool {
        self.old == ZERO_ID
    }
}

/// A parsed push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    /// Ref updates, in order.
    pub commands: Vec<Command>,
    /// Client wants `report-status`.
    pub report_status: bool,
    /// Client wants progress and status multiplexed (`side-band-64k`).
    pub side_band: bool,
    /// Client wants all-or-nothing.
    pub atomic: bool,
    /// Push options (`git push -o`), when the client sent them.
    pub options: Vec<String>,
    /// Byte offset of the pack in the body (the body's length when there is none).
    pub pack_offset: usize,
}

/// Why a push request is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// Framing.
    #[error("{0}")]
    Framing(#[from] PktError),
    /// A command line is not `<old> <new> <ref>`.
    #[error("malformed ref update command")]
    BadCommand,
    /// An object id is not 40 lowercase hex digits.
    #[error("malformed object id")]
    BadId,
    /// A ref name git would not accept.
    #[error("invalid ref name")]
    BadRef,
    /// No commands.
    #[error("no ref update commands")]
    NoCommands,
    /// A capability the gate does not offer.
    #[error("capability {0:?} is not offered by the gate")]
    Capability(String),
    /// Shallow pushes and signed pushes are not offered.
    #[error("{0} pushes are not supported by the gate")]
    Unsupported(&'static str),
    /// A pack where none belongs, or none where one must be.
    #[error("{0}")]
    Pack(&'static str),
}

/// Parses a receive-pack request body.
pub fn parse(body: &[u8]) -> Result<PushRequest, ReceiveError> {
    let mut reader = Reader::new(body);
    let mut commands = Vec::new();
    let mut caps: Vec<String> = Vec::new();
    loop {
        match reader.next_packet()? {
            None => return Err(ReceiveError::Framing(PktError::Truncated(reader.position()))),
            Some(Packet::Flush) => break,
            Some(Packet::Delim | Packet::ResponseEnd) => return Err(ReceiveError::BadCommand),
            Some(Packet::Data(line)) => {
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                if line.starts_with(b"shallow ") {
                    return Err(ReceiveError::Unsupported("shallow"));
                }
                if line.starts_with(b"push-cert") {
                    return Err(ReceiveError::Unsupported("signed"));
                }
                let (command, cap_part) = match line.iter().position(|&b| b == 0) {
                    Some(i) if commands.is_empty() => (&line[..i], Some(&line[i + 1..])),
                    Some(_) => return Err(ReceiveError::BadCommand),
                    None => (line, None),
                };
                if let Some(cap_part) = cap_part {
                    let text =
                        std::str::from_utf8(cap_part).map_err(|_| ReceiveError::BadCommand)?;
                    caps = text.split(' ').filter(|c| !c.is_empty()).map(String::from).collect();
                }
                commands.push(parse_command(command)?);
            }
        }
    }
    if commands.is_empty() {
        return Err(ReceiveError::NoCommands);
    }
    let offered: Vec<&str> = CAPABILITIES.split(' ').collect();
    let mut request = PushRequest {
        commands,
        report_status: false,
        side_band: false,
        atomic: false,
        options: Vec::new(),
        pack_offset: 0,
    };
    let mut push_options = false;
    for cap in &caps {
        let name = cap.split('=').next().unwrap_or("");
        let ok = match name {
            "agent" | "session-id" => true,
            "object-format" => cap == "object-format=sha1",
            _ => offered.contains(&cap.as_str()),
        };
        if !ok {
            return Err(ReceiveError::Capability(cap.clone()));
        }
        match name {
            "report-status" => request.report_status = true,
            "side-band-64k" => request.side_band = true,
            "atomic" => request.atomic = true,
            "push-options" => push_options = true,
            _ => {}
        }
    }
    if push_options {
        loop {
            match reader.next_packet()? {
                None => return Err(ReceiveError::Framing(PktError::Truncated(reader.position()))),
                Some(Packet::Flush) => break,
                Some(Packet::Data(option)) => {
                    let option = option.strip_suffix(b"\n").unwrap_or(option);
                    let text = std::str::from_utf8(option).map_err(|_| ReceiveError::BadCommand)?;
                    request.options.push(text.to_string());
                }
                Some(_) => return Err(ReceiveError::BadCommand),
            }
        }
    }
    request.pack_offset = reader.position();
    let has_pack = reader.position() < body.len();
    let all_deletes = request.commands.iter().all(Command::is_delete);
    if all_deletes && has_pack {
        return Err(ReceiveError::Pack("a pack was sent with only deletions"));
    }
    if !all_deletes && !body[reader.position()..].starts_with(b"PACK") {
        return Err(ReceiveError::Pack("ref updates need a pack"));
    }
    Ok(request)
}

fn parse_command(line: &[u8]) -> Result<Command, ReceiveError> {
    let text = std::str::from_utf8(line).map_err(|_| ReceiveError::BadCommand)?;
    let mut parts = text.splitn(3, ' ');
    let (Some(old), Some(new), Some(refname)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ReceiveError::BadCommand);
    };
    if !valid_id(old) || !valid_id(new) {
        return Err(ReceiveError::BadId);
    }
    if !valid_refname(refname) {
        return Err(ReceiveError::BadRef);
    }
    if old == ZERO_ID && new == ZERO_ID {
        return Err(ReceiveError::BadCommand);
    }
    Ok(Command { old: old.into(), new: new.into(), refname: refname.into() })
}

/// 40 lowercase hex digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == 40 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The rules of git-check-ref-format(1), plus: under `refs/heads/` or `refs/tags/` only
/// (the mirror tracks nothing else).
pub fn valid_refname(name: &str) -> bool {
    if !(name.starts_with("refs/heads/") || name.starts_with("refs/tags/")) || name.len() > 1024 {
        return false;
    }
    if name.ends_with('/') || name.ends_with('.') || name.contains("..") || name.contains("@{") {
        return false;
    }
    if name.bytes().any(|b| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b)) {
        return false;
    }
    name.split('/').all(|c| !c.is_empty() && !c.starts_with('.') && !c.ends_with(".lock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::data;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn body(lines: &[String], options: Option<&[&str]>, pack: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            out.extend(data(l.as_bytes()));
        }
        out.extend_from_slice(b"0000");
        if let Some(opts) = options {
            for o in opts {
                out.extend(data(o.as_bytes()));
            }
            out.extend_from_slice(b"0000");
        }
        out.extend_from_slice(pack);
        out
    }

    #[test]
    fn parses_commands_capabilities_options_and_the_pack_offset() {
        let first = format!(
            "{A} {B} refs/heads/main\0report-status side-band-64k push-options agent=git/2.47\n"
        );
        let second = format!("{ZERO_ID} {B} refs/tags/v1\n");
        let b = body(&[first, second], Some(&["bottle.bypass=test fixture"]), b"PACKxyz");
        let req = parse(&b).unwrap();
        assert_eq!(req.commands.len(), 2);
        assert!(req.commands[1].is_create());
        assert!(req.report_status && req.side_band && !req.atomic);
        assert_eq!(req.options, ["bottle.bypass=test fixture"]);
        assert_eq!(&b[req.pack_offset..], b"PACKxyz");
    }

    #[test]
    fn refuses_what_was_not_offered_or_is_malformed() {
        let cases: Vec<(Vec<u8>, ReceiveError)> = vec![
            (
                body(&[format!("{A} {B} refs/heads/main\0report-status-v2\n")], None, b"PACK"),
                ReceiveError::Capability("report-status-v2".into()),
            ),
            (
                body(&[format!("{A} {B} refs/heads/main\0object-format=sha256\n")], None, b"PACK"),
                ReceiveError::Capability("object-format=sha256".into()),
            ),
            (body(&[format!("{A} {B} refs/heads/../x\n")], None, b"PACK"), ReceiveError::BadRef),
            (
                body(&[format!("{A} {B} refs/remotes/origin/x\n")], None, b"PACK"),
                ReceiveError::BadRef,
            ),
            (body(&[format!("{A} {B} HEAD\n")], None, b"PACK"), ReceiveError::BadRef),
            (body(&[format!("{A} XYZ refs/heads/x\n")], None, b"PACK"), ReceiveError::BadId),
            (
                body(&[format!("{A} {B} refs/heads/x\n")], None, b""),
                ReceiveError::Pack("ref updates need a pack"),
            ),
            (
                body(&[format!("{A} {ZERO_ID} refs/heads/x\n")], None, b"PACK"),
                ReceiveError::Pack("a pack was sent with only deletions"),
            ),
            (body(&[format!("shallow {A}\n")], None, b""), ReceiveError::Unsupported("shallow")),
            (body(&[], None, b""), ReceiveError::NoCommands),
            (b"00zz".to_vec(), ReceiveError::Framing(PktError::BadLength(0))),
            (
                data(format!("{A} {B} refs/heads/x\n").as_bytes()),
                ReceiveError::Framing(PktError::Truncated(99)),
            ),
        ];
        for (b, want) in cases {
            assert_eq!(parse(&b), Err(want.clone()), "{want}");
        }
    }

    #[test]
    fn refnames_follow_check_ref_format() {
        for ok in ["refs/heads/main", "refs/heads/feature/x-1", "refs/tags/v1.0"] {
            assert!(valid_refname(ok), "{ok}");
        }
        for bad in [
            "refs/heads/a..b",
            "refs/heads/.x",
            "refs/heads/x.lock",
            "refs/heads/x/",
            "refs/heads/a b",
            "refs/heads/a@{1}",
            "refs/heads//x",
            "refs/heads/x.",
        ] {
            assert!(!valid_refname(bad), "{bad}");
        }
    }
}
