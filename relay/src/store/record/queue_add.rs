//! Kind 16, QueueAdd: entries of the outbound queue for one stored message (a Body frame written
//! just before it), one entry per group of at most [`MAX_RECIPIENTS`] recipients on one
//! destination. Written by `Op::Enqueue`.
//!
//! Payload: `segment u32, offset u64, len u32` (the Body's bytes), `first_seq u64`,
//! `vec<slot u32, destination str, recipients u8>`: group `k` is the entry with id
//! `(first_seq + k, slot)` and `recipients` pending recipients.
//!
//! # The stored body
//! The Body frame of a queued message holds its envelope before the message, so that the index
//! keeps only a compact entry per message and the envelope is read from the mmap with the body:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | version | `u8` | 1 |
//! | first_seq | `u64` | sequence number of the first entry of this body (as in the record) |
//! | created | `i64` | unix seconds, start of the retry window |
//! | sender | `str` | `MAIL FROM` address, empty for a bounce |
//! | groups | `vec<destination str, vec<recipient str>>` | one group per entry, in id order |
//! | message | rest of the frame | the message as it is sent |
//!
//! Field types as in [`format`](crate::store::format).

use std::collections::HashMap;

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::Index;
use crate::store::queue::{all_bits, Entry, QueueId, MAX_DESTINATIONS, MAX_RECIPIENTS};
use crate::store::{AccountId, BodyRef, Error, OpResult};

/// Version byte of the stored envelope.
const ENVELOPE_VERSION: u8 = 1;
/// Longest destination name (RFC 1035 §2.3.4: 255 octets; an address literal is shorter).
const MAX_DESTINATION_LEN: usize = 255;
/// Longest sender or recipient address (RFC 5321 §4.5.3.1.3: a path is at most 256 octets).
const MAX_ADDRESS_LEN: usize = 256;

/// One entry of a [`QueueAdd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueGroup {
    /// Slot of the destination (see [`QueueId`]).
    pub slot: u32,
    /// Lowercase domain or address literal.
    pub destination: String,
    /// Number of recipients, 1 to [`MAX_RECIPIENTS`].
    pub recipients: u8,
}

/// Queue entries for one stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueAdd {
    /// The stored envelope and message (a Body record written before this one).
    pub body: BodyRef,
    /// Sequence number of the first entry; the others follow one by one.
    pub first_seq: u64,
    /// The entries, in id order.
    pub groups: Vec<QueueGroup>,
}

impl Kind for QueueAdd {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.body.segment);
        w.u64(self.body.offset);
        w.u32(self.body.len);
        w.u64(self.first_seq);
        w.len(self.groups.len());
        for g in &self.groups {
            w.u32(g.slot);
            w.str(&g.destination);
            w.u8(g.recipients);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let body = BodyRef {
            segment: r.u32()?,
            offset: r.u64()?,
            len: r.u32()?,
        };
        let first_seq = r.u64()?;
        let n = r.count(9)?;
        let mut groups = Vec::with_capacity(n);
        for _ in 0..n {
            groups.push(QueueGroup {
                slot: r.u32()?,
                destination: r.str()?,
                recipients: r.u8()?,
            });
        }
        Ok(QueueAdd {
            body,
            first_seq,
            groups,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        for (k, g) in self.groups.iter().enumerate() {
            let n = usize::from(g.recipients);
            if n == 0 || n > MAX_RECIPIENTS {
                continue;
            }
            let e = Entry {
                seq: self.first_seq.saturating_add(k as u64),
                offset: self.body.offset,
                segment: self.body.segment,
                remaining: all_bits(n),
            };
            if index.queue.add(g.slot, &g.destination, e) {
                *index.seg_refs.entry(self.body.segment).or_default() += 1;
            }
        }
        None
    }
}

/// Whether `d` can be a destination: a lowercase domain or address literal, without spaces or
/// control characters.
fn check_destination(d: &str) -> Result<(), Error> {
    if d.is_empty() || d.len() > MAX_DESTINATION_LEN {
        return Err(Error::Invalid("bad destination length"));
    }
    if d.chars()
        .any(|c| c.is_ascii_uppercase() || c.is_whitespace() || c.is_control() || c == '@')
    {
        return Err(Error::Invalid("destination is not a lowercase domain"));
    }
    Ok(())
}

/// Whether `a` can be an envelope address (no line breaks or other control characters, which
/// would end the SMTP command it goes into).
fn check_address(a: &str, may_be_empty: bool) -> Result<(), Error> {
    if (a.is_empty() && !may_be_empty) || a.len() > MAX_ADDRESS_LEN {
        return Err(Error::Invalid("bad address length"));
    }
    if a.chars().any(char::is_control) {
        return Err(Error::Invalid("control character in address"));
    }
    Ok(())
}

/// The stored body: envelope, then the message.
fn encode_stored(
    first_seq: u64,
    created: i64,
    sender: &str,
    groups: &[(&str, &[String])],
    message: &[u8],
) -> Vec<u8> {
    let envelope: usize = groups
        .iter()
        .map(|(d, rs)| 8 + d.len() + rs.iter().map(|r| 4 + r.len()).sum::<usize>())
        .sum();
    let mut out = Vec::with_capacity(32 + sender.len() + envelope + message.len());
    let mut w = Writer(&mut out);
    w.u8(ENVELOPE_VERSION);
    w.u64(first_seq);
    w.i64(created);
    w.str(sender);
    w.len(groups.len());
    for (d, rs) in groups {
        w.str(d);
        w.len(rs.len());
        for r in *rs {
            w.str(r);
        }
    }
    out.extend_from_slice(message);
    out
}

/// The envelope of one entry, read from its stored body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    /// Unix seconds.
    pub(crate) created: i64,
    /// `MAIL FROM`, empty for a bounce.
    pub(crate) sender: String,
    /// The entry's destination.
    pub(crate) destination: String,
    /// The entry's recipients.
    pub(crate) recipients: Vec<String>,
    /// Where the message starts in the stored body.
    pub(crate) message_start: usize,
}

/// The envelope of entry `seq` from the stored body `stored` of its [`QueueAdd`].
pub(crate) fn read_envelope(stored: &[u8], seq: u64) -> Result<Envelope, DecodeError> {
    let mut r = Reader(stored);
    if r.u8()? != ENVELOPE_VERSION {
        return Err(DecodeError("unknown queued message version"));
    }
    let first_seq = r.u64()?;
    let created = r.i64()?;
    let sender = r.str()?;
    let n = r.count(8)?;
    let k = seq
        .checked_sub(first_seq)
        .and_then(|k| usize::try_from(k).ok())
        .filter(|k| *k < n)
        .ok_or(DecodeError("entry not in its queued message"))?;
    let mut mine = None;
    for i in 0..n {
        let destination = r.str()?;
        let m = r.count(4)?;
        let mut recipients = Vec::with_capacity(if i == k { m } else { 0 });
        for _ in 0..m {
            if i == k {
                recipients.push(r.str()?);
            } else {
                r.bytes()?;
            }
        }
        if i == k {
            mine = Some((destination, recipients));
        }
    }
    let (destination, recipients) = mine.ok_or(DecodeError("entry not in its queued message"))?;
    Ok(Envelope {
        created,
        sender,
        destination,
        recipients,
        message_start: stored.len() - r.0.len(),
    })
}

/// `Op::Enqueue`: one stored body (envelope and message), an entry per destination and group of
/// at most [`MAX_RECIPIENTS`] of its recipients.
pub(crate) fn plan(
    p: &mut impl Planner,
    sender: &str,
    created: i64,
    destinations: &[(String, Vec<String>)],
    message: &[u8],
) -> Result<OpResult, Error> {
    check_address(sender, true)?;
    let mut groups: Vec<(&str, &[String])> = Vec::new();
    for (d, rcpts) in destinations {
        check_destination(d)?;
        if rcpts.is_empty() {
            return Err(Error::Invalid("destination without recipients"));
        }
        for r in rcpts {
            check_address(r, false)?;
        }
        groups.extend(rcpts.chunks(MAX_RECIPIENTS).map(|part| (d.as_str(), part)));
    }
    if groups.is_empty() {
        return Ok(OpResult::Enqueued(Vec::new()));
    }
    let q = &p.index().queue;
    let first_seq = q.next_seq();
    if first_seq.checked_add(groups.len() as u64).is_none() {
        return Err(Error::Invalid("queue ids exhausted"));
    }
    // Destinations without entries take the lowest free slots, in order of first appearance.
    let mut fresh: HashMap<&str, u32> = HashMap::new();
    let new: Vec<&str> = groups
        .iter()
        .map(|(d, _)| *d)
        .filter(|d| q.slot(d).is_none() && fresh.insert(d, 0).is_none())
        .collect();
    for (d, slot) in new.iter().zip(q.new_slots(new.len())) {
        if slot as usize >= MAX_DESTINATIONS {
            return Err(Error::Invalid("too many queue destinations"));
        }
        fresh.insert(d, slot);
    }
    let slots: Vec<u32> = groups
        .iter()
        .map(|(d, _)| q.slot(d).unwrap_or_else(|| fresh[d]))
        .collect();
    let stored = encode_stored(first_seq, created, sender, &groups, message);
    if u32::try_from(stored.len()).map_or(true, |l| l >= u32::MAX - 16) {
        return Err(Error::Invalid("message too large"));
    }
    let body = p.append_body(&stored)?;
    let ids = slots
        .iter()
        .zip(first_seq..)
        .map(|(&slot, seq)| QueueId { seq, slot })
        .collect();
    p.emit(
        QueueAdd {
            body,
            first_seq,
            groups: groups
                .iter()
                .zip(slots)
                .map(|((d, rs), slot)| QueueGroup {
                    slot,
                    destination: (*d).to_owned(),
                    recipients: u8::try_from(rs.len()).unwrap_or(u8::MAX),
                })
                .collect(),
        }
        .into(),
    )?;
    Ok(OpResult::Enqueued(ids))
}

#[cfg(test)]
pub(crate) mod test_data {
    //! Values of this kind for the codec tests in `format`.
    use super::*;
    use crate::store::format::Record;
    use proptest::prelude::*;

    /// Any record of this kind (round trip, bit flips).
    pub(crate) fn arbitrary() -> impl Strategy<Value = Record> {
        (
            (any::<u32>(), any::<u64>(), any::<u32>()),
            any::<u64>(),
            proptest::collection::vec((any::<u32>(), "[a-z.\\[\\]0-9]{0,12}", any::<u8>()), 0..5),
        )
            .prop_map(|((segment, offset, len), first_seq, gs)| {
                Record::QueueAdd(QueueAdd {
                    body: BodyRef {
                        segment,
                        offset,
                        len,
                    },
                    first_seq,
                    groups: gs
                        .into_iter()
                        .map(|(slot, destination, recipients)| QueueGroup {
                            slot,
                            destination,
                            recipients,
                        })
                        .collect(),
                })
            })
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::QueueAdd(QueueAdd {
                body: BodyRef {
                    segment: 3,
                    offset: 1 << 40,
                    len: 77,
                },
                first_seq: 9,
                groups: vec![
                    QueueGroup {
                        slot: 0,
                        destination: "example.org".into(),
                        recipients: 2,
                    },
                    QueueGroup {
                        slot: 1,
                        destination: "[127.0.0.1]".into(),
                        recipients: 32,
                    },
                ],
            }),
            concat!(
                "4500000004714563100300000000000000000100004d000000090000000000000002000000",
                "000000000b0000006578616d706c652e6f726702010000000b0000005b3132372e302e302e",
                "315d20",
            ),
        )]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip_and_damage() {
        let rcpts = |p: &str, n: usize| -> Vec<String> {
            (0..n).map(|i| format!("{p}{i}@x.example")).collect()
        };
        let (a, b) = (rcpts("a", 3), rcpts("b", 1));
        let groups: Vec<(&str, &[String])> = vec![
            ("x.example", &a[..2]),
            ("x.example", &a[2..]),
            ("[10.0.0.1]", &b),
        ];
        let stored = encode_stored(40, 1_700_000_000, "", &groups, b"Subject: hi\r\n\r\nyo\r\n");
        for (k, (d, rs)) in groups.iter().enumerate() {
            let e = read_envelope(&stored, 40 + k as u64).unwrap();
            assert_eq!(e.created, 1_700_000_000);
            assert_eq!(e.sender, "");
            assert_eq!(e.destination, *d);
            assert_eq!(e.recipients, rs.to_vec());
            assert_eq!(&stored[e.message_start..], b"Subject: hi\r\n\r\nyo\r\n");
        }
        assert!(read_envelope(&stored, 39).is_err());
        assert!(read_envelope(&stored, 43).is_err());
        for cut in 0..stored.len() - 19 {
            assert!(read_envelope(&stored[..cut], 42).is_err(), "cut at {cut}");
        }
        let mut v2 = stored.clone();
        v2[0] = 2;
        assert!(read_envelope(&v2, 40).is_err());
    }

    #[test]
    fn destination_and_address_checks() {
        for ok in [
            "example.org",
            "[127.0.0.1]",
            "[ipv6:::1]",
            "xn--bcher-kva.example",
        ] {
            assert!(check_destination(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in ["", "Example.org", "a b", "a\r\nb", "a@b", long.as_str()] {
            assert!(check_destination(bad).is_err(), "{bad:?}");
        }
        assert!(check_address("", true).is_ok());
        assert!(check_address("", false).is_err());
        assert!(check_address("a@b>\r\nRCPT TO:<c@d", false).is_err());
        assert!(check_address("Mixed@Case.example", false).is_ok());
    }
}
