//! The `chatmail.ini` that `relay init` writes: every option of [`OPTIONS`] with its help and
//! default, commented out (the reference template's style), `mail_domain` set. Generated from
//! the one list, so it cannot drift from what [`Config::build`](crate::config::Config::build)
//! reads; a test parses it back with the relay's own loader. No I/O.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{OptionDefault, KNOWN_OTHER, OPTIONS};

/// The template for `mail_domain` (and `data_dir`, written uncommented when given).
pub fn template(mail_domain: &str, data_dir: Option<&Path>) -> String {
    let mut out = format!(
        "# chatmail.ini of the relay for {mail_domain}, written by `relay init`.\n\
         #\n\
         # Every option the relay reads is listed below with its default, commented out:\n\
         # uncomment a line to change it. `relay dns --config <this file>` prints the DNS\n\
         # records to create; `relay serve --config <this file>` runs the relay.\n\
         \n\
         [params]\n"
    );
    for o in OPTIONS {
        out.push('\n');
        for line in o.help.lines() {
            let _ = writeln!(out, "# {}", line.trim());
        }
        let _ = match (o.name, o.default) {
            ("data_dir", _) if data_dir.is_some() => writeln!(
                out,
                "data_dir = {}",
                data_dir.map(Path::display).expect("checked")
            ),
            (name, OptionDefault::Required) => writeln!(out, "{name} = {mail_domain}"),
            (name, OptionDefault::Value("")) => writeln!(out, "# {name} ="),
            (name, OptionDefault::Value(v)) => writeln!(out, "# {name} = {v}"),
            (name, OptionDefault::Example(v)) => {
                writeln!(out, "# (example, not the default)\n# {name} = {v}")
            }
        };
    }
    let _ = write!(
        out,
        "\n# Options of the reference relay that are accepted and have no effect here:\n# {}\n",
        KNOWN_OTHER.join(", ")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Mode, RawConfig};

    fn build(text: &str) -> Config {
        let raw = RawConfig::parse_ini(text).unwrap();
        assert!(raw.unknown_keys().is_empty(), "{:?}", raw.unknown_keys());
        Config::build(&raw, Mode::Serve).unwrap()
    }

    #[test]
    fn the_template_parses_and_lists_every_option() {
        let text = template("chat.example.org", None);
        let c = build(&text);
        assert_eq!(c.mail_domain, "chat.example.org");
        for o in OPTIONS {
            assert!(
                text.lines()
                    .any(|l| l.trim_start_matches("# ").split(" =").next() == Some(o.name)),
                "{} is missing",
                o.name
            );
        }
        let with_data = template("_r1.test", Some(Path::new("/srv/relay")));
        assert_eq!(build(&with_data).data_dir, Path::new("/srv/relay"));
    }

    #[test]
    fn the_defaults_written_are_the_defaults_applied() {
        let text = template("chat.example.org", None);
        // Uncomment every option line whose value is the default (not the examples).
        let mut uncommented = String::new();
        let mut example = false;
        let mut n = 0;
        for line in text.lines() {
            let option = line
                .strip_prefix("# ")
                .filter(|l| OPTIONS.iter().any(|o| l.split(" =").next() == Some(o.name)));
            match option {
                Some(l) if !example => {
                    uncommented.push_str(l);
                    n += 1;
                }
                _ => uncommented.push_str(line),
            }
            example = line == "# (example, not the default)";
            uncommented.push('\n');
        }
        assert!(n + 3 >= OPTIONS.len(), "{n} lines uncommented");
        let applied = build(&text);
        let written = build(&uncommented);
        assert_eq!(format!("{applied:?}"), format!("{written:?}"));
    }
}
