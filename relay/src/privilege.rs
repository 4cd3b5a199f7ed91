//! The local privilege boundary: what another user on the machine can reach.
//!
//! - **Private files and directories.** Everything under the data directory (store segments,
//!   checkpoints, the lock file, `tls/`) is created `0700` (directories) or `0600` (files)
//!   whatever the umask, and an existing one with wider permissions is narrowed when it is
//!   opened. [`private_dir`] and [`open_private`] are the only ways the relay creates them.
//! - **Peer credentials.** [`is_trusted_peer`] accepts a Unix-socket peer only if it is root or
//!   runs as the relay's own user (the admin socket checks it on every connection).
//! - **Dropping root.** [`RelayUser::lookup`] finds the unprivileged user named by option `user`;
//!   [`RelayUser::become_user`] hands the data directory to it and switches the whole process
//!   (supplementary groups, then group, then user) so that root cannot be regained.
//!
//! The mode is set explicitly after creation (`fchmod` on the open descriptor, `chmod` on a
//! directory we created or own), because a creation mode is only an upper bound: the umask can
//! narrow it further (umask 0777 would give `0000`), never widen it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every directory the relay creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the relay creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and any missing parents as `0700` directories; narrows `path` itself to `0700`
/// if it already exists with other permissions. Parents that already exist are left alone (they
/// may be `/var/lib` or `/tmp`).
///
/// # Errors
/// The `mkdir`/`chmod` error, or `path` exists and is not a directory.
pub fn private_dir(path: &Path) -> io::Result<()> {
    let mut missing: Vec<&Path> = Vec::new();
    let mut at = Some(path);
    while let Some(p) = at {
        if p.as_os_str().is_empty() {
            break;
        }
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", p.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(p),
            Err(e) => return Err(e),
        }
        at = p.parent();
    }
    for dir in missing.iter().rev() {
        match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
            Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?,
            // Created concurrently by another thread of ours: checked below for `path`.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let meta = std::fs::metadata(path)?;
    if meta.mode() & 0o7777 != DIR_MODE {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Makes `root` and everything under it private: directories `0700`, regular files and sockets
/// `0600`. Symbolic links are neither followed nor changed. Run on the data directory at start, so
/// a tree left by an older version (or copied with a wide umask) is narrowed before it is used.
///
/// # Errors
/// The first `stat`/`readdir`/`chmod` error, with the path in the message.
pub fn private_tree(root: &Path) -> io::Result<()> {
    let with_path = |p: &Path| {
        let p = p.to_owned();
        move |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", p.display()))
    };
    let mut todo = vec![root.to_owned()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).map_err(with_path(&p))?;
        let ft = meta.file_type();
        let want = if ft.is_dir() {
            for entry in std::fs::read_dir(&p).map_err(with_path(&p))? {
                todo.push(entry.map_err(with_path(&p))?.path());
            }
            DIR_MODE
        } else if ft.is_file() || std::os::unix::fs::FileTypeExt::is_socket(&ft) {
            FILE_MODE
        } else {
            continue;
        };
        if meta.mode() & 0o7777 != want {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(want))
                .map_err(with_path(&p))?;
        }
    }
    Ok(())
}

/// Opens `path` with `options` (which decide read/write/create), creating it `0600`, and narrows
/// an existing file to `0600` through the open descriptor.
///
/// # Errors
/// The `open`/`fchmod` error.
pub fn open_private(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let file = options.mode(FILE_MODE).open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() && meta.mode() & 0o7777 != FILE_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Creates `path` (`0600`) holding `data` unless it exists, so that a crash leaves no file or a
/// whole one and two processes creating it at once agree on one: the data goes to a temporary
/// file beside it, is `fsync`ed and hard-linked to `path` (a link fails if the name exists),
/// then the folder is `fsync`ed. `Ok(false)`: `path` existed already (another process was
/// quicker) and is left as it is: read it.
///
/// # Errors
/// Writing the temporary file, linking or syncing failed; the message names the step and file.
pub fn create_private_once(path: &Path, data: &[u8]) -> io::Result<bool> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let step = |what: &str, p: &Path| {
        let p = p.display().to_string();
        let what = what.to_owned();
        move |e: io::Error| io::Error::new(e.kind(), format!("{what} {p}: {e}"))
    };
    let written = (|| {
        let mut f = open_private(
            OpenOptions::new().write(true).create(true).truncate(true),
            &tmp,
        )?;
        f.write_all(data)?;
        f.sync_all()
    })();
    written.map_err(step("writing", &tmp))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(step("syncing", dir))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(step("creating", path)(e)),
    }
}

/// Whether a Unix-socket peer with this uid may talk to the relay: root, or the relay's own
/// (effective) user.
pub fn is_trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == rustix::process::geteuid().as_raw()
}

/// Whether the peer of a connected Unix socket is trusted ([`is_trusted_uid`]), by its
/// `SO_PEERCRED` (the credentials it had when it connected; it cannot fake them).
///
/// # Errors
/// `getsockopt` failed (the connection should be refused then).
pub fn is_trusted_peer(socket: &std::os::unix::net::UnixStream) -> io::Result<bool> {
    let cred = rustix::net::sockopt::socket_peercred(socket)?;
    Ok(is_trusted_uid(cred.uid.as_raw()))
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The unprivileged user a root-started relay switches to.
#[derive(Debug, Clone)]
pub struct RelayUser {
    /// Its name (option `user`).
    pub name: String,
    uid: u32,
    gid: u32,
}

/// Why the relay cannot become its user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user named by option `user` does not exist.
    #[error(
        "user `{0}` (option `user`) does not exist: create it with \
         `useradd --system --user-group --home-dir /var/lib/chatmail-relay --shell /usr/sbin/nologin {0}`, \
         or set `user = root` to run as root on purpose"
    )]
    NoSuchUser(String),
    /// Looking the user up failed.
    #[error("looking up user `{0}`: {1}")]
    Lookup(String, nix::Error),
    /// Handing the data directory to the user failed.
    #[error("giving {path} to user `{user}`: {source}")]
    Chown {
        /// The file or directory.
        path: PathBuf,
        /// The user.
        user: String,
        /// The error.
        source: io::Error,
    },
    /// A `setgroups`/`setgid`/`setuid` call failed, or root could be regained afterwards.
    #[error("switching to user `{0}`: {1}")]
    Switch(String, String),
}

impl RelayUser {
    /// Looks `name` up in the user database.
    ///
    /// # Errors
    /// [`Error::NoSuchUser`] (the message says how to create it) or [`Error::Lookup`].
    pub fn lookup(name: &str) -> Result<RelayUser, Error> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(RelayUser {
                name: name.to_owned(),
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            Ok(None) => Err(Error::NoSuchUser(name.to_owned())),
            Err(e) => Err(Error::Lookup(name.to_owned(), e)),
        }
    }

    /// The user's uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Gives `data_dir` and everything under it to this user (symbolic links themselves, never
    /// their targets), then switches the process to it: `setgroups([gid])`, `setgid`, `setuid`,
    /// in that order, for every thread (glibc applies them process-wide). Checks that root cannot
    /// be regained.
    ///
    /// Call it as root, after binding privileged ports and attaching XDP and before opening the
    /// store, so that every store file is created by the user.
    ///
    /// # Errors
    /// [`Error::Chown`] or [`Error::Switch`].
    pub fn become_user(&self, data_dir: &Path) -> Result<(), Error> {
        self.chown_tree(data_dir)?;
        let switch = |what: &str, r: nix::Result<()>| {
            r.map_err(|e| Error::Switch(self.name.clone(), format!("{what}: {e}")))
        };
        let gid = nix::unistd::Gid::from_raw(self.gid);
        switch("setgroups", nix::unistd::setgroups(&[gid]))?;
        switch("setgid", nix::unistd::setgid(gid))?;
        switch(
            "setuid",
            nix::unistd::setuid(nix::unistd::Uid::from_raw(self.uid)),
        )?;
        if self.uid != 0 && nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
            return Err(Error::Switch(
                self.name.clone(),
                "root could be regained after setuid".into(),
            ));
        }
        Ok(())
    }

    fn chown_tree(&self, dir: &Path) -> Result<(), Error> {
        let err = |path: &Path| {
            let user = self.name.clone();
            let path = path.to_owned();
            move |source| Error::Chown { path, user, source }
        };
        std::os::unix::fs::lchown(dir, Some(self.uid), Some(self.gid)).map_err(err(dir))?;
        let meta = std::fs::symlink_metadata(dir).map_err(err(dir))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(dir).map_err(err(dir))? {
                let entry = entry.map_err(err(dir))?;
                self.chown_tree(&entry.path())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn creates_private_dirs_and_narrows_existing_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        private_dir(&deep).unwrap();
        for p in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&tmp.path().join(p)), 0o700, "{p}");
        }
        std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&deep).unwrap();
        assert_eq!(mode(&deep), 0o700);
        // A pre-existing parent keeps its mode.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o751)).unwrap();
        private_dir(&tmp.path().join("x")).unwrap();
        assert_eq!(mode(tmp.path()), 0o751);
        assert_eq!(mode(&tmp.path().join("x")), 0o700);
    }

    #[test]
    fn private_tree_narrows_everything_but_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"x").unwrap();
        std::fs::write(tmp.path().join("outside"), b"x").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("link")).unwrap();
        for (p, m) in [("", 0o755), ("a", 0o777), ("a/b", 0o711), ("a/b/f", 0o666)] {
            std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        }
        std::fs::set_permissions(
            tmp.path().join("outside"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        private_tree(&root).unwrap();
        for p in ["", "a", "a/b"] {
            assert_eq!(mode(&root.join(p)), 0o700, "{p}");
        }
        assert_eq!(mode(&root.join("a/b/f")), 0o600);
        assert_eq!(
            mode(&tmp.path().join("outside")),
            0o644,
            "link target untouched"
        );
    }

    #[test]
    fn private_dir_refuses_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, b"").unwrap();
        assert!(private_dir(&f).is_err());
    }

    #[test]
    fn opens_private_files_and_narrows_existing_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        drop(open_private(OpenOptions::new().write(true).create_new(true), &p).unwrap());
        assert_eq!(mode(&p), 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_private(OpenOptions::new().read(true), &p).unwrap());
        assert_eq!(mode(&p), 0o600);
    }

    #[test]
    fn root_and_own_uid_are_trusted_others_not() {
        assert!(is_trusted_uid(0));
        assert!(is_trusted_uid(rustix::process::geteuid().as_raw()));
        let other = if rustix::process::geteuid().as_raw() == 65534 {
            65533
        } else {
            65534
        };
        assert!(!is_trusted_uid(other));
    }

    #[test]
    fn missing_user_says_how_to_create_it() {
        let e = RelayUser::lookup("no-such-relay-user-x").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("useradd --system"), "{text}");
        assert!(text.contains("user = root"), "{text}");
    }
}
