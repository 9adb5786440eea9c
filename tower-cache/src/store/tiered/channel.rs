//! The invalidation channel's messages: what one instance tells the others.

use std::fmt::Write as _;

/// An invalidation another instance applies to its L1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Notice {
    /// Drop one key (removed or overwritten).
    Key(String),
    /// Drop every entry tagged `tag`; entries loaded before `version` are
    /// refused afterwards.
    Tag {
        /// The invalidated tag.
        tag: String,
        /// The invalidation's version in L2.
        version: u64,
    },
    /// Drop everything; entries loaded before `version` are refused.
    All {
        /// The invalidation's version in L2.
        version: u64,
    },
}

/// A [`Notice`] and the instance that sent it, as carried on the channel:
/// `{from}|{kind}|{version}|{name}`, where kind is `k`, `t` or `a`, the
/// version is empty for a key, and the name (a key or a tag, which may
/// contain `|`) runs to the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Message {
    pub(super) from: String,
    pub(super) notice: Notice,
}

impl Message {
    /// The wire form.
    pub(super) fn encode(&self) -> String {
        let mut out = String::with_capacity(self.from.len() + 32);
        out.push_str(&self.from);
        let _ = match &self.notice {
            Notice::Key(key) => write!(out, "|k||{key}"),
            Notice::Tag { tag, version } => write!(out, "|t|{version}|{tag}"),
            Notice::All { version } => write!(out, "|a|{version}|"),
        };
        out
    }

    /// Parses the wire form; `None` for anything else.
    pub(super) fn parse(payload: &str) -> Option<Message> {
        let mut parts = payload.splitn(4, '|');
        let (from, kind, version, name) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let notice = match kind {
            "k" if version.is_empty() => Notice::Key(name.to_owned()),
            "t" => Notice::Tag {
                tag: name.to_owned(),
                version: version.parse().ok()?,
            },
            "a" if name.is_empty() => Notice::All {
                version: version.parse().ok()?,
            },
            _ => return None,
        };
        Some(Message {
            from: from.to_owned(),
            notice,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(notice: Notice) -> Message {
        Message {
            from: "0123456789abcdef".into(),
            notice,
        }
    }

    #[test]
    fn every_notice_reads_back_as_itself() {
        for notice in [
            Notice::Key("products/1|x".into()),
            Notice::Key(String::new()),
            Notice::Tag {
                tag: "product:1|2".into(),
                version: 1_764_000_000_000_001,
            },
            Notice::All { version: 7 },
        ] {
            let m = msg(notice);
            assert_eq!(Message::parse(&m.encode()), Some(m));
        }
    }

    #[test]
    fn malformed_messages_are_ignored() {
        for bad in [
            "",
            "x",
            "x|k",
            "x|t||tag",
            "x|t|-1|tag",
            "x|a|1|name",
            "x|k|1|key",
            "x|z|1|n",
        ] {
            assert_eq!(Message::parse(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_tag_round_trips(tag in ".*", version in any::<u64>()) {
            let m = msg(Notice::Tag { tag, version });
            prop_assert_eq!(Message::parse(&m.encode()), Some(m));
        }
    }
}
