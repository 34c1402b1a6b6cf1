//! The managed local PostgreSQL cluster: created once under `<data_dir>/pg` from the machine's
//! PostgreSQL binaries, started on a private unix socket, stopped cleanly on shutdown.
//!
//! Layout under `<data_dir>`:
//! - `portcullis.lock` — held (flock) for as long as an engine uses this data dir, so a second
//!   engine fails with a clear message instead of corrupting the cluster.
//! - `pg/data` — the cluster (initdb); `pg/data/portcullis.conf` is rewritten at every start.
//! - `pg/run` — the unix socket directory (mode 0700: only the engine's user and root connect).
//! - `pg/postgres.log` — the server log.
//!
//! Everything here blocks (it runs external programs); async callers use `spawn_blocking`.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The database the engine uses inside its managed cluster.
pub const DATABASE: &str = "portcullis";
/// The superuser initdb creates in the managed cluster.
pub const SUPERUSER: &str = "portcullis";

/// Unix socket paths are limited to 107 bytes (`sun_path`), including `/.s.PGSQL.5432`.
const MAX_SOCKET_DIR_LEN: usize = 107 - "/.s.PGSQL.5432".len();

#[derive(Debug, thiserror::Error)]
pub enum ManagedPgError {
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) were found on PATH, via `pg_config --bindir`, \
         or under /usr/lib/postgresql/*/bin; install PostgreSQL (Debian: `apt-get install postgresql`), set \
         `database.pg_bin_dir`, or set `database.url` to use an existing server"
    )]
    BinariesNotFound,
    #[error("`database.pg_bin_dir` = `{}` does not contain initdb, pg_ctl and postgres", .0.display())]
    BadBinDir(PathBuf),
    #[error(
        "another Portcullis engine{} is already using data dir `{}`; stop it first or choose another --data-dir",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), .dir.display()
    )]
    DataDirInUse { dir: PathBuf, pid: Option<u32> },
    #[error(
        "PostgreSQL refuses to run as root and the configured `database.os_user` `{0}` does not exist; \
         create it, set `database.os_user` to an unprivileged user, or run the engine as a normal user"
    )]
    NoOsUser(String),
    #[error(
        "the managed PostgreSQL runs as `{user}`, which cannot enter `{}`; choose a --data-dir that user can reach",
        dir.display()
    )]
    Unreachable { user: String, dir: PathBuf },
    #[error(
        "the data dir path is too long for a PostgreSQL unix socket (`{}` is over {MAX_SOCKET_DIR_LEN} bytes); \
         choose a shorter --data-dir", .0.display()
    )]
    PathTooLong(PathBuf),
    #[error("{action} failed: {detail}")]
    Command { action: &'static str, detail: String },
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ManagedPgError + use<> {
    let path = path.to_owned();
    move |source| ManagedPgError::Io { action, path, source }
}

/// Connection settings for the engine database of a managed cluster that another engine on
/// `data_dir` is running (for admin commands run beside a live engine).
pub fn running_cluster_config(data_dir: &Path) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config.host_path(data_dir.join("pg").join("run")).user(SUPERUSER).dbname(DATABASE);
    config
}

/// The operating-system identity the cluster runs as (only differs from ours when we are root).
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// A running managed cluster. Call [`ManagedPostgres::stop`] on shutdown; if the engine dies
/// without stopping it, a guard process stops the cluster once the engine's process is gone.
#[derive(Debug)]
pub struct ManagedPostgres {
    bin_dir: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<RunAs>,
    guard: Option<Child>,
    /// Where the server logs (kept to say why a restart failed).
    log: PathBuf,
    /// Set by [`ManagedPostgres::stop`]: the supervisor restarts nothing after it.
    stopped: bool,
    // INVARIANT: held open for the life of this value; closing it releases the data-dir lock.
    _lock: File,
}

impl ManagedPostgres {
    /// Creates the cluster if needed and starts it. `bin_dir` overrides binary discovery;
    /// `os_user` is who runs the cluster when the engine runs as root.
    pub fn start(data_dir: &Path, bin_dir: Option<&Path>, os_user: &str) -> Result<Self, ManagedPgError> {
        fs::create_dir_all(data_dir).map_err(io_err("cannot create data dir", data_dir))?;
        let data_dir = fs::canonicalize(data_dir).map_err(io_err("cannot resolve data dir", data_dir))?;
        let lock = lock_data_dir(&data_dir)?;
        let bin_dir = match bin_dir {
            Some(dir) if has_server_binaries(dir) => dir.to_owned(),
            Some(dir) => return Err(ManagedPgError::BadBinDir(dir.to_owned())),
            None => find_bin_dir().ok_or(ManagedPgError::BinariesNotFound)?,
        };
        let run_as = if nix::unistd::geteuid().is_root() { Some(lookup_user(os_user)?) } else { None };
        let root = cluster_root(&data_dir, run_as.as_ref())?;
        let pgdata = root.join("data");
        let socket_dir = root.join("run");
        if socket_dir.as_os_str().len() > MAX_SOCKET_DIR_LEN {
            return Err(ManagedPgError::PathTooLong(socket_dir));
        }
        if let Some(user) = &run_as {
            // Where the cluster's own directory will be made.
            check_reachable(root.parent().unwrap_or(&root), user)?;
        }
        for dir in [&root, &socket_dir] {
            fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("cannot set mode of", dir))?;
            if let Some(user) = &run_as {
                std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)).map_err(io_err("cannot chown", dir))?;
            }
        }

        let log = root.join("postgres.log");
        let mut pg =
            ManagedPostgres { bin_dir, pgdata, socket_dir, run_as, guard: None, log, stopped: false, _lock: lock };
        if !pg.pgdata.join("PG_VERSION").exists() {
            pg.initdb()?;
        }
        pg.write_runtime_conf()?;
        // The lock is ours, so a running postmaster here was orphaned by an engine that died
        // without stopping it: restart it under this engine's settings.
        if pg.is_running() {
            tracing::warn!(pgdata = %pg.pgdata.display(), "stopping a PostgreSQL left running by a previous engine");
            pg.pg_ctl("stop PostgreSQL", &["stop", "-m", "fast", "-w"])?;
        }
        pg.start_server()?;
        tracing::info!(pgdata = %pg.pgdata.display(), "managed PostgreSQL started");
        Ok(pg)
    }

    fn start_server(&mut self) -> Result<(), ManagedPgError> {
        let log_arg = self.log.to_string_lossy().into_owned();
        self.pg_ctl("start PostgreSQL", &["start", "-w", "-t", "60", "-l", &log_arg]).map_err(|err| {
            ManagedPgError::Command { action: "start PostgreSQL", detail: format!("{err}; {}", tail_of(&self.log)) }
        })?;
        if let Some(mut old) = self.guard.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        self.guard = self.spawn_guard();
        Ok(())
    }

    /// Whether the postmaster recorded in the data dir is alive (cheap: no process is started).
    pub fn postmaster_alive(&self) -> bool {
        let mut text = String::new();
        let read = File::open(self.pgdata.join("postmaster.pid")).and_then(|mut f| f.read_to_string(&mut text));
        let pid = read.ok().and_then(|_| text.lines().next()?.trim().parse::<u32>().ok());
        pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }

    /// Whether [`ManagedPostgres::stop`] was called (nothing is to be restarted).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Starts the cluster again after its postmaster died (its old backends must have exited
    /// first: PostgreSQL refuses to start beside them, and the caller retries with back-off).
    pub fn restart(&mut self) -> Result<(), ManagedPgError> {
        if self.stopped {
            return Ok(());
        }
        self.start_server()?;
        tracing::info!(pgdata = %self.pgdata.display(), "managed PostgreSQL restarted");
        Ok(())
    }

    /// Connection settings for the engine's database (created by the caller if missing).
    pub fn connection_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config.host_path(&self.socket_dir).user(SUPERUSER).dbname(dbname);
        config
    }

    /// The unix socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Stops the cluster (fast shutdown: open sessions are ended, data is flushed).
    pub fn stop(&mut self) -> Result<(), ManagedPgError> {
        self.stopped = true;
        if let Some(mut guard) = self.guard.take() {
            // The guard's only job is to stop a cluster we did not stop; we are about to.
            let _ = guard.kill();
            let _ = guard.wait();
        }
        if self.is_running() {
            self.pg_ctl("stop PostgreSQL", &["stop", "-m", "fast", "-w", "-t", "60"])?;
        }
        tracing::info!(pgdata = %self.pgdata.display(), "managed PostgreSQL stopped");
        Ok(())
    }

    fn initdb(&self) -> Result<(), ManagedPgError> {
        tracing::info!(pgdata = %self.pgdata.display(), "creating the managed PostgreSQL cluster");
        let pgdata = self.pgdata.to_string_lossy().into_owned();
        // Trust over the unix socket only: the socket directory is 0700, there is no TCP listener.
        let args = ["-D", &pgdata, "-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--auth=trust", "--no-instructions"];
        self.run("initdb", "create the PostgreSQL cluster (initdb)", &args)?;
        let conf = self.pgdata.join("postgresql.conf");
        let mut file = OpenOptions::new().append(true).open(&conf).map_err(io_err("cannot open", &conf))?;
        file.write_all(b"\n# Written by Portcullis at every start.\ninclude_if_exists = 'portcullis.conf'\n")
            .map_err(io_err("cannot write", &conf))
    }

    /// Settings that depend on where the data dir is now; rewritten at every start so a moved
    /// data dir keeps working.
    fn write_runtime_conf(&self) -> Result<(), ManagedPgError> {
        let socket = self.socket_dir.to_string_lossy().replace('\'', "''");
        let text = format!(
            "listen_addresses = ''\nunix_socket_directories = '{socket}'\nunix_socket_permissions = 0700\n\
             max_connections = 200\nshared_buffers = '128MB'\nsynchronous_commit = on\nfsync = on\n"
        );
        let path = self.pgdata.join("portcullis.conf");
        fs::write(&path, text).map_err(io_err("cannot write", &path))?;
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid)).map_err(io_err("cannot chown", &path))?;
        }
        Ok(())
    }

    fn is_running(&self) -> bool {
        // pg_ctl status: 0 running, 3 not running, 4 no accessible data directory.
        let pgdata = self.pgdata.to_string_lossy().into_owned();
        self.command("pg_ctl")
            .args(["status", "-D", &pgdata])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn pg_ctl(&self, action: &'static str, args: &[&str]) -> Result<(), ManagedPgError> {
        let pgdata = self.pgdata.to_string_lossy().into_owned();
        let mut all = vec!["-D", pgdata.as_str()];
        all.extend_from_slice(args);
        self.run("pg_ctl", action, &all)
    }

    fn run(&self, program: &str, action: &'static str, args: &[&str]) -> Result<(), ManagedPgError> {
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ManagedPgError::Command { action, detail: e.to_string() })?;
        if output.status.success() {
            return Ok(());
        }
        let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        }
        Err(ManagedPgError::Command { action, detail: format!("{} ({})", detail, output.status) })
    }

    /// A command for one of the PostgreSQL binaries, as the cluster's user, in its own process
    /// group (so a terminal's Ctrl-C reaches the engine, which then stops the cluster in order).
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.process_group(0).env("LC_ALL", "C").env_remove("PGDATA").current_dir("/");
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid).gid(user.gid).env("HOME", "/").env("USER", &user.name);
        }
        cmd
    }

    /// Starts a tiny watchdog that sends the postmaster a fast-shutdown signal once this process
    /// is gone, so an engine killed with SIGKILL leaves no PostgreSQL behind. It checks that the
    /// postmaster is still the one it was started for, so it never stops a later engine's cluster.
    fn spawn_guard(&self) -> Option<Child> {
        let pid_file = self.pgdata.join("postmaster.pid");
        let mut text = String::new();
        File::open(&pid_file).ok()?.read_to_string(&mut text).ok()?;
        let postmaster: u32 = text.lines().next()?.trim().parse().ok()?;
        let script = r#"while [ -d "/proc/$1" ]; do sleep 1; done
            [ "$(head -n 1 "$2" 2>/dev/null)" = "$3" ] && kill -INT "$3""#;
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .arg("portcullis-pg-guard")
            .arg(std::process::id().to_string())
            .arg(&pid_file)
            .arg(postmaster.to_string())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
    }
}

/// Takes the data dir's lock, recording our pid in it for the next engine's error message.
fn lock_data_dir(data_dir: &Path) -> Result<File, ManagedPgError> {
    let path = data_dir.join("portcullis.lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("cannot open", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(ManagedPgError::DataDirInUse { dir: data_dir.to_owned(), pid: text.trim().parse().ok() });
        }
        Err(TryLockError::Error(source)) => {
            return Err(ManagedPgError::Io { action: "cannot lock", path, source });
        }
    }
    file.set_len(0).map_err(io_err("cannot write", &path))?;
    file.rewind().map_err(io_err("cannot write", &path))?;
    writeln!(file, "{}", std::process::id()).map_err(io_err("cannot write", &path))?;
    Ok(file)
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"].iter().all(|b| dir.join(b).is_file())
}

/// PATH, then `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("initdb"))
            .find(|p| p.is_file())
            // Debian links initdb into PATH; its siblings live next to the real file.
            .and_then(|p| fs::canonicalize(p).ok())
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|dir| has_server_binaries(dir))
    });
    let from_pg_config = || {
        let out = Command::new("pg_config").arg("--bindir").output().ok()?;
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        (out.status.success() && has_server_binaries(&dir)).then_some(dir)
    };
    let from_debian = || {
        let mut dirs: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .filter(|(_, dir)| has_server_binaries(dir))
            .collect();
        dirs.sort();
        dirs.pop().map(|(_, dir)| dir)
    };
    on_path.or_else(from_pg_config).or_else(from_debian)
}

fn lookup_user(name: &str) -> Result<RunAs, ManagedPgError> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) if !user.uid.is_root() => {
            Ok(RunAs { name: user.name, uid: user.uid.as_raw(), gid: user.gid.as_raw() })
        }
        _ => Err(ManagedPgError::NoOsUser(name.to_owned())),
    }
}

/// The cluster's user must be able to walk down to the data dir.
/// Where the clusters live whose data dir their user cannot enter (see [`cluster_root`]).
const OUTSIDE_CLUSTERS: &str = "/var/lib/portcullis/clusters";

/// Where a data dir's cluster lives: `<data dir>/pg`; but when the engine runs as root and the
/// cluster's user cannot enter the data dir (a checkout under `/root`, the usual place on a fresh
/// server or container), in a directory of its own under [`OUTSIDE_CLUSTERS`], named by a hash of
/// the data dir and reached from it through a `pg` symlink (which the engine and the CLI, as root,
/// follow; the cluster itself never needs to).
fn cluster_root(data_dir: &Path, run_as: Option<&RunAs>) -> Result<PathBuf, ManagedPgError> {
    let local = data_dir.join("pg");
    let Some(user) = run_as else { return Ok(local) };
    let linked = fs::symlink_metadata(&local).is_ok_and(|m| m.file_type().is_symlink());
    if !linked && check_reachable(data_dir, user).is_ok() {
        return Ok(local);
    }
    if linked {
        return fs::read_link(&local).map_err(io_err("cannot read the cluster link", &local));
    }
    if local.exists() {
        // A cluster made here before, which its user cannot reach: say so rather than move it.
        return check_reachable(data_dir, user).map(|()| local);
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let home = Path::new(OUTSIDE_CLUSTERS).join(name);
    fs::create_dir_all(&home).map_err(io_err("cannot create", &home))?;
    for dir in home.ancestors().take_while(|d| d.starts_with("/var/lib/portcullis")) {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io_err("cannot set mode of", dir))?;
    }
    let outside = home.join("pg");
    std::os::unix::fs::symlink(&outside, &local).map_err(io_err("cannot link the cluster from", &local))?;
    tracing::info!(data_dir = %data_dir.display(), cluster = %outside.display(),
        "the cluster's user cannot enter the data dir: the cluster lives outside it");
    Ok(outside)
}

fn check_reachable(data_dir: &Path, user: &RunAs) -> Result<(), ManagedPgError> {
    for dir in data_dir.ancestors() {
        let meta = fs::metadata(dir).map_err(io_err("cannot inspect", dir))?;
        let mode = meta.permissions().mode();
        let can_enter = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !can_enter {
            return Err(ManagedPgError::Unreachable { user: user.name.clone(), dir: dir.to_owned() });
        }
    }
    Ok(())
}

/// The last lines of the server log, for an error message.
fn tail_of(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        return format!("see {}", log.display());
    }
    let recent: Vec<&str> = lines.into_iter().rev().collect();
    format!("server log ({}): {}", log.display(), recent.join(" | "))
}
