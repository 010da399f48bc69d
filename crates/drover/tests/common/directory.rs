//! Identity providers for the sign-in tests: Debian's OpenLDAP `slapd`
//! with a generated directory (`tests/fixtures/gen.py`: 1,000 users, 1,100
//! groups, nested groups, a locked user) over LDAP, StartTLS and LDAPS with
//! a test CA (the bench's [`drover_bench::env::Slapd`]); npm's
//! `oidc-provider` (`ui-tests/oidc-provider.mjs`); and chromium sign-ins
//! (`ui-tests/sso.mjs`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The service account and its password.
pub const READONLY_DN: &str = "cn=readonly,dc=example,dc=org";
pub const READONLY_PASSWORD: &str = "readonly-password";
/// Every fixture user's password.
pub const USER_PASSWORD: &str = "password";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running slapd with the test directory (`tests/fixtures`); stopped on
/// drop. The bench's, so that `drover bench login` measures the same
/// directory.
pub struct Slapd(drover_bench::env::Slapd);

impl Slapd {
    pub fn start() -> Slapd {
        Slapd(drover_bench::env::Slapd::start().expect("slapd starts (./scripts/test installs it)"))
    }

    /// Change the directory as its root (an LDIF for `ldapmodify`).
    pub fn modify(&self, ldif: &str) {
        self.0.modify(ldif).unwrap();
    }
}

impl std::ops::Deref for Slapd {
    type Target = drover_bench::env::Slapd;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// A running `oidc-provider`; ended on drop.
pub struct OidcProvider {
    child: Child,
    pub issuer: String,
}

impl OidcProvider {
    /// Start it with one confidential client whose redirects are Drover's
    /// UI callback and any loopback port's `/callback`, and these users
    /// (`{"alice": {"password": …, "groups": […]}}`).
    pub fn start(
        client_id: &str,
        secret: &str,
        ui_callback: &str,
        users: &serde_json::Value,
    ) -> OidcProvider {
        let mut child = Command::new("node")
            .arg(repo().join("ui-tests/oidc-provider.mjs"))
            .current_dir(repo().join("ui-tests"))
            .env("OIDC_PORT", "0")
            .env("OIDC_CLIENT_ID", client_id)
            .env("OIDC_CLIENT_SECRET", secret)
            .env(
                "OIDC_REDIRECT_URIS",
                format!("{ui_callback},http://127.0.0.1/callback"),
            )
            .env("OIDC_LOOPBACK_ANY_PORT", "1")
            .env("OIDC_TEST_ADMIN", "1")
            .env("OIDC_USERS", users.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let issuer = first
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("oidc-provider did not start: {first:?}"))
            .to_owned();
        OidcProvider { child, issuer }
    }
}

impl OidcProvider {
    /// Change (or add) a user at the provider.
    pub fn put_user(&self, name: &str, user: &serde_json::Value) {
        self.admin("PUT", name, Some(user));
    }

    /// Remove a user at the provider.
    pub fn delete_user(&self, name: &str) {
        self.admin("DELETE", name, None);
    }

    fn admin(&self, method: &str, name: &str, body: Option<&serde_json::Value>) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sSf",
            "-X",
            method,
            &format!("{}/test/users/{name}", self.issuer),
        ]);
        if let Some(b) = body {
            cmd.args(["--data-binary", &b.to_string()]);
        }
        assert!(
            cmd.status().unwrap().success(),
            "{method} {name} at the provider"
        );
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `ui-tests/sso.mjs` in chromium: (exit code, stdout, stderr).
pub fn sso(mode: &str, target: &str, user: &str, password: &str) -> (i32, String, String) {
    sso_with(mode, target, user, password, &[])
}

/// [`sso`] with more arguments.
pub fn sso_with(
    mode: &str,
    target: &str,
    user: &str,
    password: &str,
    more: &[&str],
) -> (i32, String, String) {
    let chromium = std::env::var("DROVER_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let out = Command::new("node")
        .arg(repo().join("ui-tests/sso.mjs"))
        .args([mode, target, user, password])
        .args(more)
        .current_dir(repo().join("ui-tests"))
        .env("DROVER_CHROMIUM", chromium)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether the browser sign-in tests can run here.
pub fn browser_ready() -> bool {
    std::env::var_os("DROVER_TEST_CHROMIUM").is_some()
        && Path::new(&repo().join("ui-tests/node_modules/playwright-core")).is_dir()
}
