//! Test accounts: generated from a pattern such as `lg{n:06}@[127.0.0.1]` (the relay creates each
//! on its first login) or read from a file of `address [password]` lines, such as the baseline's
//! `/var/lib/baseline-mail/users.txt`.

/// Login name (the address) and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The address, which is also the login.
    pub addr: String,
    /// The password.
    pub password: String,
}

/// An address pattern with one `{n}` placeholder, optionally zero-padded (`{n:06}`) or
/// space-padded (`{n:6}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    prefix: String,
    suffix: String,
    width: usize,
    zero: bool,
}

impl Pattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// A message if there is not exactly one `{n…}` placeholder or its format is not understood.
    pub fn parse(pattern: &str) -> Result<Pattern, String> {
        let open = pattern
            .find("{n")
            .ok_or_else(|| format!("pattern {pattern:?} has no {{n}} placeholder"))?;
        let close = pattern[open..]
            .find('}')
            .map(|i| open + i)
            .ok_or_else(|| format!("pattern {pattern:?}: unclosed placeholder"))?;
        let spec = &pattern[open + 2..close];
        let (width, zero) = match spec.strip_prefix(':') {
            None if spec.is_empty() => (0, false),
            Some(w) if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => {
                let zero = w.starts_with('0') && w.len() > 1;
                let width = w
                    .parse()
                    .map_err(|_| format!("pattern {pattern:?}: bad width"))?;
                (width, zero)
            }
            _ => {
                return Err(format!(
                    "pattern {pattern:?}: use {{n}}, {{n:6}} or {{n:06}}"
                ))
            }
        };
        let suffix = &pattern[close + 1..];
        if suffix.contains("{n") {
            return Err(format!("pattern {pattern:?} has more than one placeholder"));
        }
        Ok(Pattern {
            prefix: pattern[..open].to_owned(),
            suffix: suffix.to_owned(),
            width,
            zero,
        })
    }

    /// The address for number `n`.
    pub fn address(&self, n: usize) -> String {
        let num = if self.zero {
            format!("{n:0w$}", w = self.width)
        } else {
            format!("{n:w$}", w = self.width)
        };
        format!("{}{num}{}", self.prefix, self.suffix)
    }
}

/// Accounts `first..first + count` of a pattern, all with `password`.
pub fn from_pattern(pattern: &Pattern, first: usize, count: usize, password: &str) -> Vec<Account> {
    (first..first + count)
        .map(|n| Account {
            addr: pattern.address(n),
            password: password.to_owned(),
        })
        .collect()
}

/// Parses `address [password]` lines (blank lines and `#` comments skipped); a line without a
/// password gets `default_password`.
pub fn parse_file(text: &str, default_password: &str) -> Vec<Account> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let addr = parts.next().unwrap_or_default().to_owned();
            let password = parts.next().unwrap_or(default_password).to_owned();
            Account { addr, password }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_padded_pattern() {
        let p = Pattern::parse("lg{n:06}@[127.0.0.1]").unwrap();
        assert_eq!(p.address(42), "lg000042@[127.0.0.1]");
        assert_eq!(p.address(1_234_567), "lg1234567@[127.0.0.1]");
    }

    #[test]
    fn plain_and_space_padded_patterns() {
        assert_eq!(Pattern::parse("u{n}@x").unwrap().address(7), "u7@x");
        assert_eq!(Pattern::parse("u{n:3}@x").unwrap().address(7), "u  7@x");
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["nobrace@x", "a{n@x", "a{n:x}@x", "a{n}{n}@x", "a{n:}@x"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pattern_ranges() {
        let p = Pattern::parse("u{n:03}@b.test").unwrap();
        let a = from_pattern(&p, 1, 3, "pw");
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].addr, "u001@b.test");
        assert_eq!(a[2].addr, "u003@b.test");
        assert!(a.iter().all(|x| x.password == "pw"));
    }

    #[test]
    fn users_file_with_and_without_passwords() {
        let text = "# users\nu001@baseline.test 2b8b85\n\n  u002@baseline.test\n";
        let a = parse_file(text, "dflt");
        assert_eq!(
            a,
            vec![
                Account {
                    addr: "u001@baseline.test".into(),
                    password: "2b8b85".into()
                },
                Account {
                    addr: "u002@baseline.test".into(),
                    password: "dflt".into()
                },
            ]
        );
    }
}
