//! Commands about the connection rather than a mailbox: CAPABILITY, LOGOUT, ID (any state);
//! ENABLE, NAMESPACE, COMPRESS (after login).

use super::super::session::Session;
use crate::session::Action;

impl Session {
    /// The capability list for the current state (RFC 3501 §7.2.1).
    pub(in super::super) fn capabilities(&self) -> String {
        let mut c = String::from(
            "IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS MOVE CONDSTORE \
             UNSELECT SPECIAL-USE QUOTA METADATA XCHATMAIL XDELTAPUSH",
        );
        if self.state.auth().is_none() {
            if self.tls {
                c.push_str(" AUTH=PLAIN");
            } else {
                c.push_str(" STARTTLS LOGINDISABLED");
            }
        }
        if self.shared.config.imap_compress && !self.compress {
            c.push_str(" COMPRESS=DEFLATE");
        }
        c
    }

    /// `CAPABILITY`
    pub(in super::super) fn capability(&mut self, tag: &str) {
        let caps = self.capabilities();
        self.line(&format!("* CAPABILITY {caps}"));
        self.finish(tag, "OK Capability completed", true);
    }

    /// `LOGOUT`
    pub(in super::super) fn logout(&mut self, tag: &str) {
        self.line("* BYE Logging out");
        self.tagged(tag, "OK Logout completed");
        self.close();
    }

    /// `ID` (RFC 2971): the client's fields are ignored.
    pub(in super::super) fn id(&mut self, tag: &str) {
        self.line("* ID (\"name\" \"relay\")");
        self.finish(tag, "OK ID completed", true);
    }

    /// `ENABLE` (RFC 5161): only CONDSTORE is enabled.
    pub(in super::super) fn enable(&mut self, tag: &str, caps: Vec<String>) {
        let mut enabled = Vec::new();
        for c in caps {
            if c == "CONDSTORE" {
                self.state.enable_condstore();
                enabled.push(c);
            }
        }
        let mut line = String::from("* ENABLED");
        for c in &enabled {
            line.push(' ');
            line.push_str(c);
        }
        self.line(&line);
        self.finish(tag, "OK Enabled", true);
    }

    /// `NAMESPACE` (RFC 2342): one personal namespace, `/` as delimiter.
    pub(in super::super) fn namespace(&mut self, tag: &str) {
        self.line("* NAMESPACE ((\"\" \"/\")) NIL NIL");
        self.finish(tag, "OK Namespace completed", true);
    }

    /// `COMPRESS DEFLATE` (RFC 4978).
    pub(in super::super) fn compress(&mut self, tag: &str, mech: &str) {
        if self.compress {
            self.tagged(tag, "NO [COMPRESSIONACTIVE] Compression already active");
        } else if mech != "DEFLATE" || !self.shared.config.imap_compress {
            self.tagged(tag, "NO Unsupported compression mechanism");
        } else {
            self.compress = true;
            self.tagged(tag, "OK DEFLATE active");
            // The client may not pipeline after COMPRESS (RFC 4978 §3); anything buffered
            // would be answered uncompressed after the switch, so drop it.
            self.framer.discard_buffered();
            self.actions.push_back(Action::StartCompress);
        }
    }
}
