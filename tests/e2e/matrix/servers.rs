//! The servers the matrix reads flags from, each started by the suite on 127.0.0.1 in a temp
//! directory and killed (with its whole process group) when dropped: `git daemon` (git://),
//! nginx with fcgiwrap running `git http-backend` (https://, HTTP basic auth, a certificate from
//! a CA made here), and sshd (ssh://, key auth only, its own config, host key and
//! authorized_keys). The bare repositories they serve live under one base directory and are
//! changed by pushing to them through the file system.
//!
//! A program that is missing fails the suite, naming the Debian package that holds it (test.sh
//! installs them); nothing is skipped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::git;

/// The bound of every wait for a server to listen.
const START_PATIENCE: Duration = Duration::from_secs(20);

/// The path of `program` (looked up in PATH, then in `also`), or a failure naming `package`.
pub fn require(program: &str, package: &str, also: &[&str]) -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    in_path
        .into_iter()
        .chain(also.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is missing: the configuration matrix needs Debian's `{package}` \
                 package (apt-get install -y {package}; ./test.sh installs it)"
            )
        })
}

/// A port that was free a moment ago on 127.0.0.1 (servers that cannot be handed a socket bind
/// it themselves; `Daemon::start` retries on another port if it was taken meanwhile).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process in its own process group, its stderr in a file; killed with its group
/// (workers, per-connection children) when dropped.
pub struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` (its stderr to `log`) and waits until `ready` holds, or fails with the
    /// log if the process exits or `ready` does not hold within the patience.
    fn spawn(
        name: &'static str,
        mut command: Command,
        log: &Path,
        ready: impl Fn() -> bool,
    ) -> Result<Daemon, String> {
        use std::os::unix::process::CommandExt as _;
        let file = std::fs::File::create(log).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let mut daemon = Daemon {
            name,
            child,
            log: log.to_owned(),
        };
        let start = Instant::now();
        loop {
            if ready() {
                return Ok(daemon);
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!("{name} exited ({status}): {}", daemon.log()));
            }
            if start.elapsed() > START_PATIENCE {
                return Err(format!(
                    "{name} not ready within {START_PATIENCE:?}: {}",
                    daemon.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Like `spawn` for a server that binds a TCP port itself: `command(port)` on a free port,
    /// ready once the port accepts; a port taken meanwhile is retried with another.
    fn on_free_port(
        name: &'static str,
        log: &Path,
        command: impl Fn(u16) -> Command,
    ) -> (Daemon, u16) {
        let mut errors = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let ready = || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
            match Daemon::spawn(name, command(port), log, ready) {
                Ok(daemon) => return (daemon, port),
                Err(e) => errors.push(e),
            }
        }
        panic!("{name} did not start: {}", errors.join("\n"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The group: nginx's workers, fcgiwrap's and sshd's and git daemon's children.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `git daemon` exporting every repository under `base` on a free 127.0.0.1 port (its log in
/// `log`).
pub fn git_daemon(base: &Path, log: &Path) -> (Daemon, u16) {
    Daemon::on_free_port("git daemon", log, |p| {
        let mut c = Command::new("git");
        c.args([
            "daemon",
            "--listen=127.0.0.1",
            "--reuseaddr",
            "--export-all",
        ])
        .arg(format!("--port={p}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(base);
        c
    })
}

/// A certificate authority made for the suite, and the files it issued.
pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
    pub file: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let file = dir.join(format!("{name}.pem"));
        std::fs::write(&file, &pem).unwrap();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem,
            file,
        }
    }

    /// A server certificate for 127.0.0.1 and localhost: (certificate file, key file).
    pub fn issue(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose};
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_file, key_file) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

/// A bare repository served by every server, and a clone that changes it.
pub struct Repo {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Repo {
    /// `name.git` under `base` with `flags/matrix.yaml` of generation 1 on `main`, and its clone
    /// at `name.work`.
    pub fn new(base: &Path, name: &str, flags: &str) -> Repo {
        let bare = base.join(format!("{name}.git"));
        let work = base.join(format!("{name}.work"));
        git(
            base,
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        git(base, &["init", "-q", "-b", "main", work.to_str().unwrap()]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        let repo = Repo { bare, work };
        repo.commit(flags, "generation 1");
        repo
    }

    /// Commits `flags` as `flags/matrix.yaml` and pushes it (through the file system); returns
    /// the commit id.
    pub fn commit(&self, flags: &str, message: &str) -> String {
        std::fs::create_dir_all(self.work.join("flags")).unwrap();
        std::fs::write(self.work.join("flags/matrix.yaml"), flags).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"]).trim().to_owned()
    }
}

/// The user the ssh server lets in (the one running the tests).
fn login_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A key pair made by ssh-keygen: (private key file, public key line).
pub fn ssh_keygen(dir: &Path, kind: &str, name: &str) -> (PathBuf, String) {
    let keygen = require("ssh-keygen", "openssh-client", &[]);
    let file = dir.join(name);
    let mut command = Command::new(keygen);
    command.args(["-q", "-t", kind, "-N", "", "-C", name, "-f"]);
    command.arg(&file);
    if kind == "rsa" {
        command.args(["-b", "3072"]);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen -t {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(file.with_extension("pub")).unwrap();
    (file, public.trim().to_owned())
}

/// Every server of the matrix, on one base directory of bare repositories.
pub struct Servers {
    pub base: PathBuf,
    pub git_port: u16,
    pub https_port: u16,
    pub ssh_port: u16,
    pub ssh_user: String,
    /// The CA that issued the web server's certificate (and the gRPC ports').
    pub ca: Ca,
    pub user: &'static str,
    pub password: &'static str,
    /// `[127.0.0.1]:PORT <host key>`: known_hosts for sshd.
    pub known_hosts: PathBuf,
    /// The same line with another ed25519 key (a host key that changed).
    pub wrong_known_hosts: PathBuf,
    /// Client keys in authorized_keys, by type (ed25519, ecdsa, rsa).
    pub ssh_keys: Vec<(&'static str, PathBuf)>,
    // Killed on drop, before the directory goes.
    daemons: Vec<Daemon>,
    _dir: tempfile::TempDir,
}

impl Servers {
    pub fn start() -> Servers {
        let sshd = require("sshd", "openssh-server", &["/usr/sbin/sshd"]);
        let nginx = require("nginx", "nginx", &["/usr/sbin/nginx"]);
        let fcgiwrap = require("fcgiwrap", "fcgiwrap", &["/usr/sbin/fcgiwrap"]);
        require("git", "git", &[]);
        let exec_path = git(Path::new("/"), &["--exec-path"]).trim().to_owned();
        let http_backend = Path::new(&exec_path).join("git-http-backend");
        assert!(
            http_backend.is_file(),
            "no git-http-backend at {} (Debian's `git` package has it)",
            http_backend.display()
        );

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let base = root.join("repos");
        let etc = root.join("etc");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&etc).unwrap();
        let mut daemons = Vec::new();

        // git://
        let (daemon, git_port) = git_daemon(&base, &etc.join("git.log"));
        daemons.push(daemon);

        // https:// : fcgiwrap runs git http-backend for nginx (TLS, basic auth).
        let ca = Ca::new(&etc, "vexil-matrix-ca");
        let (cert, key) = ca.issue(&etc, "git-https");
        let (user, password) = ("vexil-reader", "matrix-pw-7Qx2");
        std::fs::write(
            etc.join("htpasswd"),
            format!("{user}:{{PLAIN}}{password}\n"),
        )
        .unwrap();
        let socket = etc.join("fcgiwrap.sock");
        let mut command = Command::new(&fcgiwrap);
        command.arg("-s").arg(format!("unix:{}", socket.display()));
        let ready = || std::os::unix::net::UnixStream::connect(&socket).is_ok();
        daemons.push(Daemon::spawn("fcgiwrap", command, &etc.join("fcgiwrap.log"), ready).unwrap());
        std::fs::create_dir_all(root.join("nginx")).unwrap();
        let conf = etc.join("nginx.conf");
        let (daemon, https_port) = Daemon::on_free_port("nginx", &etc.join("nginx.log"), |p| {
            let text = nginx_conf(&root, p, &cert, &key, &socket, &http_backend, &base);
            std::fs::write(&conf, text).unwrap();
            let mut c = Command::new(&nginx);
            c.arg("-e").arg("stderr").arg("-p").arg(root.join("nginx"));
            c.arg("-c").arg(&conf);
            c
        });
        daemons.push(daemon);

        // ssh:// : key authentication only, for the user running the tests.
        let (host_key, host_public) = ssh_keygen(&etc, "ed25519", "host_ed25519");
        let (_, other_public) = ssh_keygen(&etc, "ed25519", "other_host_ed25519");
        let mut ssh_keys = Vec::new();
        let mut authorized = String::new();
        for kind in ["ed25519", "ecdsa", "rsa"] {
            let (key, public) = ssh_keygen(&etc, kind, &format!("client_{kind}"));
            authorized.push_str(&public);
            authorized.push('\n');
            ssh_keys.push((kind, key));
        }
        std::fs::write(etc.join("authorized_keys"), authorized).unwrap();
        let ssh_user = login_user();
        if ssh_user == "root" {
            // sshd's privilege separation directory (made by the service, which never runs).
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let sshd_conf = etc.join("sshd_config");
        let (daemon, ssh_port) = Daemon::on_free_port("sshd", &etc.join("sshd.log"), |p| {
            std::fs::write(&sshd_conf, sshd_config(&etc, p, &host_key)).unwrap();
            let mut c = Command::new(&sshd);
            c.args(["-D", "-e", "-f"]).arg(&sshd_conf);
            c
        });
        daemons.push(daemon);
        let key_field = |line: &str| line.split(' ').take(2).collect::<Vec<_>>().join(" ");
        let known_hosts = etc.join("known_hosts");
        let wrong_known_hosts = etc.join("wrong_known_hosts");
        let host = format!("[127.0.0.1]:{ssh_port}");
        std::fs::write(
            &known_hosts,
            format!("{host} {}\n", key_field(&host_public)),
        )
        .unwrap();
        std::fs::write(
            &wrong_known_hosts,
            format!("{host} {}\n", key_field(&other_public)),
        )
        .unwrap();

        Servers {
            base,
            git_port,
            https_port,
            ssh_port,
            ssh_user,
            ca,
            user,
            password,
            known_hosts,
            wrong_known_hosts,
            ssh_keys,
            daemons,
            _dir: dir,
        }
    }

    /// Every server's log (for a failure's message).
    pub fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|d| format!("--- {}:\n{}", d.name, d.log()))
            .collect()
    }

    /// Checks each server with the git command line (the servers themselves, apart from
    /// Vexil): `git ls-remote` over git://, https:// (with the CA and the password) and ssh://
    /// (with the ed25519 key and known_hosts, strict host key checking).
    pub fn check_with_git_cli(&self, name: &str) -> Result<(), String> {
        let bare = self.base.join(format!("{name}.git"));
        let expected = git(&bare, &["rev-parse", "main"]).trim().to_owned();
        let (_, ed25519) = &self.ssh_keys[0];
        let ssh = format!(
            "ssh -F none -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
            ed25519.display(),
            self.known_hosts.display()
        );
        let cases = [
            (self.git_url(name), vec![]),
            (
                format!(
                    "https://{}:{}@127.0.0.1:{}/{name}.git",
                    self.user, self.password, self.https_port
                ),
                vec![("GIT_SSL_CAINFO", self.ca.file.display().to_string())],
            ),
            (self.ssh_url(name), vec![("GIT_SSH_COMMAND", ssh)]),
        ];
        for (url, env) in cases {
            let out = Command::new("git")
                .args(["ls-remote", &url, "refs/heads/main"])
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_TERMINAL_PROMPT", "0")
                .envs(env)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() || !stdout.starts_with(&expected) {
                return Err(format!(
                    "git ls-remote {url}: {}{stdout}{}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr),
                    self.logs()
                ));
            }
        }
        Ok(())
    }

    pub fn file_url(&self, name: &str) -> String {
        format!("file://{}/{name}.git", self.base.display())
    }

    pub fn git_url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}.git", self.git_port)
    }

    pub fn https_url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}.git", self.https_port)
    }

    pub fn ssh_url(&self, name: &str) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}/{name}.git",
            self.ssh_user,
            self.ssh_port,
            self.base.display()
        )
    }
}

fn nginx_conf(
    root: &Path,
    port: u16,
    cert: &Path,
    key: &Path,
    socket: &Path,
    http_backend: &Path,
    base: &Path,
) -> String {
    let (root, cert, key) = (root.display(), cert.display(), key.display());
    let (socket, backend, base) = (socket.display(), http_backend.display(), base.display());
    // Workers run as root when nginx starts as root (they reach the socket in the temp dir);
    // otherwise `user` is ignored.
    format!(
        r#"daemon off;
master_process on;
worker_processes 1;
user root root;
pid {root}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {root}/nginx/body;
  proxy_temp_path {root}/nginx/proxy;
  fastcgi_temp_path {root}/nginx/fastcgi;
  uwsgi_temp_path {root}/nginx/uwsgi;
  scgi_temp_path {root}/nginx/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{
      auth_basic "flags";
      auth_basic_user_file {root}/etc/htpasswd;
      fastcgi_pass unix:{socket};
      fastcgi_param SCRIPT_FILENAME {backend};
      fastcgi_param GIT_PROJECT_ROOT {base};
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param GIT_CONFIG_NOSYSTEM 1;
      fastcgi_param REMOTE_USER $remote_user;
      fastcgi_param PATH_INFO $uri;
      fastcgi_param QUERY_STRING $query_string;
      fastcgi_param REQUEST_METHOD $request_method;
      fastcgi_param CONTENT_TYPE $content_type;
      fastcgi_param CONTENT_LENGTH $content_length;
      fastcgi_param HTTP_CONTENT_ENCODING $http_content_encoding;
    }}
  }}
}}
"#
    )
}

fn sshd_config(etc: &Path, port: u16, host_key: &Path) -> String {
    let etc = etc.display();
    format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {etc}/sshd.pid\n\
         AuthorizedKeysFile {etc}/authorized_keys\nPubkeyAuthentication yes\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
         StrictModes no\nPermitRootLogin prohibit-password\nPrintMotd no\n\
         MaxStartups 100:30:200\nMaxSessions 50\n",
        host_key.display()
    )
}
