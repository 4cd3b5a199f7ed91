//! Kind 10, Keyword: append a keyword to the account's keyword table (keyword `i` is flag bit
//! `KEYWORD_SHIFT + i`). Written before the record that first uses it, by `Op::Append` and
//! `Op::SetFlags` through `resolve_flags`.
//!
//! Payload: `account u32, name str`.

use super::Kind;
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::Index;
use crate::store::{flag_bits, AccountId, Error, Flag};

/// Append a keyword to the account's keyword table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyword {
    /// Account.
    pub account: u32,
    /// Keyword as first seen.
    pub name: String,
}

impl Kind for Keyword {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.account);
        w.str(&self.name);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Keyword {
            account: r.u32()?,
            name: r.str()?,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let acc = index.accounts.get_mut(&self.account)?;
        if acc.keywords.len() < flag_bits::MAX_KEYWORDS {
            acc.keywords.push(self.name.clone());
        }
        None
    }
}

/// Flag bits for `flags`, and the keywords that must be defined first (if `define`; otherwise
/// unknown keywords are ignored).
pub(crate) fn resolve_flags(
    index: &Index,
    account: AccountId,
    flags: &[Flag],
    define: bool,
) -> Result<(u64, Vec<String>), Error> {
    let acc = index.account(account).ok_or(Error::NotFound("account"))?;
    let mut bits = 0u64;
    let mut new: Vec<String> = Vec::new();
    for f in flags {
        bits |= match f {
            Flag::Seen => flag_bits::SEEN,
            Flag::Answered => flag_bits::ANSWERED,
            Flag::Flagged => flag_bits::FLAGGED,
            Flag::Deleted => flag_bits::DELETED,
            Flag::Draft => flag_bits::DRAFT,
            Flag::Keyword(k) => {
                if k.is_empty()
                    || k.len() > 128
                    || k.starts_with('\\')
                    || k.chars()
                        .any(|c| c.is_control() || c.is_whitespace() || "(){%*\"\\]".contains(c))
                {
                    return Err(Error::Invalid("bad keyword"));
                }
                let i = match acc.keyword(k) {
                    Some(i) => i,
                    None => match new.iter().position(|n| n.eq_ignore_ascii_case(k)) {
                        Some(j) => acc.keywords.len() + j,
                        None if define => {
                            new.push(k.clone());
                            acc.keywords.len() + new.len() - 1
                        }
                        None => continue,
                    },
                };
                if i >= flag_bits::MAX_KEYWORDS {
                    return Err(Error::Invalid("too many keywords"));
                }
                1u64 << (flag_bits::KEYWORD_SHIFT + i as u32)
            }
        };
    }
    Ok((bits, new))
}

#[cfg(test)]
pub(crate) mod test_data {
    //! Values of this kind for the codec tests in `format`.
    use super::*;
    use crate::store::format::Record;
    use proptest::prelude::*;

    /// Any record of this kind (round trip, bit flips).
    pub(crate) fn arbitrary() -> impl Strategy<Value = Record> {
        let s = ".{0,20}";
        (any::<u32>(), s).prop_map(|(account, name)| Record::Keyword(Keyword { account, name }))
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::Keyword(Keyword {
                account: 7,
                name: "$k".into(),
            }),
            "0b0000009adf59440a0700000002000000246b",
        )]
    }
}
