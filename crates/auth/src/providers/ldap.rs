//! LDAP and Active Directory: logins, group lookups and searches.
//!
//! A login:
//! 1. refuses an empty password before anything is sent (an LDAP bind with
//!    a DN and no password is an unauthenticated bind, which "succeeds");
//! 2. searches the user as the service account, every value escaped as
//!    RFC 4515 says, with the configured filter (and, for AD, the
//!    account-disabled bit) applied;
//! 3. binds as the user, then again as the service account;
//! 4. reads the user's groups: groups whose member attribute names the user
//!    (or the user's `memberOf`), and, if asked, the groups those are in,
//!    a level at a time with one search per 50 groups, to a depth bound.
//!
//! Connections bound as the service account are pooled per configuration;
//! one that fails is dropped, and a changed configuration starts a new
//! pool. Each connection goes to an address checked against the outbound
//! rule ([`drover_net::outbound`]): the TCP stream is opened here, to the
//! address that was checked, and the server's name is kept for TLS.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_core::api::LdapConfig;
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, StdStream};

use super::ProviderError;
use crate::principals::{self, Principal};

/// Most idle connections kept per configuration.
const POOL_SIZE: usize = 8;
/// Groups asked about per nested-group search.
const NESTED_BATCH: usize = 50;
/// Entries per page of an unlimited search.
const PAGE: i32 = 500;
/// Most entries a people search returns.
const SEARCH_LIMIT: i32 = 20;

/// A directory as configured, with its pool of service-account connections.
pub struct Directory {
    /// `ldap` or `activedirectory`.
    pub provider: String,
    config: LdapConfig,
    password: String,
    allow_private: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    idle: Mutex<Vec<Ldap>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("provider", &self.provider)
            .field("servers", &self.config.servers)
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// A directory for `config`, whose service account's password is
    /// `password`.
    pub fn new(
        provider: &str,
        config: LdapConfig,
        password: String,
        allow_private: bool,
    ) -> Result<Self, ProviderError> {
        let tls = if config.tls || config.starttls {
            let c = drover_net::client::client_config(config.certificate.as_deref(), false)
                .map_err(ProviderError::Config)?;
            Some(Arc::new(c))
        } else {
            None
        };
        Ok(Self {
            provider: provider.to_owned(),
            config,
            password,
            allow_private,
            tls,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.connection_timeout.unwrap_or(5000))
    }

    fn ad(&self) -> bool {
        self.provider == "activedirectory"
    }

    fn user_class(&self) -> &str {
        self.config
            .user_object_class
            .as_deref()
            .unwrap_or(if self.ad() { "person" } else { "inetOrgPerson" })
    }

    fn login_attr(&self) -> &str {
        self.config
            .user_login_attribute
            .as_deref()
            .unwrap_or(if self.ad() { "sAMAccountName" } else { "uid" })
    }

    fn name_attr(&self) -> &str {
        self.config.user_name_attribute.as_deref().unwrap_or("cn")
    }

    fn group_class(&self) -> &str {
        self.config
            .group_object_class
            .as_deref()
            .unwrap_or(if self.ad() { "group" } else { "groupOfNames" })
    }

    fn group_name_attr(&self) -> &str {
        self.config.group_name_attribute.as_deref().unwrap_or("cn")
    }

    fn member_attr(&self) -> &str {
        self.config
            .group_member_mapping_attribute
            .as_deref()
            .unwrap_or(if self.ad() { "memberOf" } else { "member" })
    }

    fn uses_member_of(&self) -> bool {
        self.member_attr().eq_ignore_ascii_case("memberOf")
    }

    fn group_base(&self) -> &str {
        self.config
            .group_search_base
            .as_deref()
            .filter(|b| !b.is_empty())
            .unwrap_or(&self.config.user_search_base)
    }

    /// The account-flags attribute and the bits that mean disabled:
    /// `userEnabledAttribute` (AD: `userAccountControl`) and
    /// `userDisabledBitMask` (default 2, AD's ACCOUNTDISABLE).
    fn enabled_attr(&self) -> Option<(&str, u64)> {
        let mask = self.config.user_disabled_bit_mask.unwrap_or(2);
        match &self.config.user_enabled_attribute {
            Some(a) => Some((a.as_str(), mask)),
            None if self.ad() => Some(("userAccountControl", mask)),
            None => None,
        }
    }

    /// A new connection to the first server that answers (not bound), at
    /// an address the outbound rule allows.
    async fn connect(&self) -> Result<Ldap, ProviderError> {
        let port = self
            .config
            .port
            .unwrap_or(if self.config.tls { 636 } else { 389 });
        let scheme = if self.config.tls { "ldaps" } else { "ldap" };
        let mut last = ProviderError::Unavailable("no servers".into());
        for server in &self.config.servers {
            let addrs = match drover_net::outbound::resolve(server, port, self.allow_private).await
            {
                Ok(a) => a,
                Err(e) => {
                    last = ProviderError::Config(e.to_string());
                    continue;
                }
            };
            let stream = match tokio::time::timeout(
                self.timeout(),
                tokio::net::TcpStream::connect(addrs.as_slice()),
            )
            .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    last = ProviderError::unavailable(format!("{server}:{port}: {e}"));
                    continue;
                }
                Err(_) => {
                    last = ProviderError::unavailable(format!("{server}:{port}: timed out"));
                    continue;
                }
            };
            let stream = stream.into_std().map_err(ProviderError::unavailable)?;
            let host = if server.contains(':') && !server.starts_with('[') {
                format!("[{server}]")
            } else {
                server.clone()
            };
            let mut settings = LdapConnSettings::new()
                .set_conn_timeout(self.timeout())
                .set_starttls(self.config.starttls)
                .set_std_stream(StdStream::Tcp(stream));
            if let Some(tls) = &self.tls {
                settings = settings.set_config(tls.clone());
            }
            match LdapConnAsync::with_settings(settings, &format!("{scheme}://{host}:{port}")).await
            {
                Ok((conn, ldap)) => {
                    ldap3::drive!(conn);
                    return Ok(ldap);
                }
                Err(e) => last = ProviderError::unavailable(format!("{server}:{port}: {e}")),
            }
        }
        Err(last)
    }

    /// A connection bound as the service account: an idle one still open
    /// (the directory may close idle connections), or a new one.
    async fn service(&self) -> Result<Ldap, ProviderError> {
        while let Some(mut ldap) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            if !ldap.is_closed() {
                return Ok(ldap);
            }
        }
        let mut ldap = self.connect().await?;
        self.bind_service(&mut ldap).await?;
        Ok(ldap)
    }

    async fn bind_service(&self, ldap: &mut Ldap) -> Result<(), ProviderError> {
        if self.password.is_empty() {
            return Err(ProviderError::Config(
                "the service account has no password".into(),
            ));
        }
        ldap.with_timeout(self.timeout())
            .simple_bind(
                &self.config.service_account_distinguished_name,
                &self.password,
            )
            .await
            .map_err(ProviderError::unavailable)?
            .success()
            .map_err(|e| {
                ProviderError::unavailable(format!("the service account cannot bind: {e}"))
            })?;
        Ok(())
    }

    fn give_back(&self, ldap: Ldap) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL_SIZE {
            idle.push(ldap);
        }
    }

    /// Search; `limit` > 0 asks for at most that many (what fits is
    /// enough: a user, a picker's page). Without a limit every entry is
    /// read, a page of 500 at a time (RFC 2696), which keeps each answer
    /// under the usual per-request limits (a directory's total limit for
    /// the service account still applies); a list cut short is an error,
    /// not fewer groups.
    async fn search(
        &self,
        ldap: &mut Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: Vec<&str>,
        limit: i32,
    ) -> Result<Vec<SearchEntry>, ProviderError> {
        let (entries, result) = if limit > 0 {
            let found = ldap
                .with_timeout(self.timeout())
                .with_search_options(ldap3::SearchOptions::new().sizelimit(limit))
                .search(base, scope, filter, attrs)
                .await
                .map_err(ProviderError::unavailable)?;
            (found.0, found.1)
        } else {
            let adapters: Vec<Box<dyn Adapter<'_, &str, Vec<&str>>>> = vec![
                Box::new(EntriesOnly::new()),
                Box::new(PagedResults::new(PAGE)),
            ];
            let mut stream = ldap
                .with_timeout(self.timeout())
                .streaming_search_with(adapters, base, scope, filter, attrs)
                .await
                .map_err(ProviderError::unavailable)?;
            let mut entries = Vec::new();
            while let Some(entry) = stream.next().await.map_err(ProviderError::unavailable)? {
                entries.push(entry);
            }
            (entries, stream.finish().await)
        };
        // noSuchObject: the base (or the user) is not there.
        if result.rc == 32 {
            return Ok(Vec::new());
        }
        if result.rc != 0 && !(result.rc == 4 && limit > 0) {
            return Err(ProviderError::unavailable(format!(
                "search failed: {result}"
            )));
        }
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    fn user_attrs(&self) -> Vec<&str> {
        let mut attrs = vec![self.login_attr(), self.name_attr()];
        if self.uses_member_of() {
            attrs.push("memberOf");
        }
        if let Some(a) = self.config.group_member_user_attribute.as_deref() {
            attrs.push(a);
        }
        if let Some((a, _)) = self.enabled_attr() {
            attrs.push(a);
        }
        attrs
    }

    fn user_filter(&self, extra: &str) -> String {
        format!(
            "(&(objectClass={}){}{})",
            ldap_escape(self.user_class()),
            extra,
            self.config
                .user_search_filter
                .as_deref()
                .unwrap_or_default()
        )
    }

    fn disabled(&self, entry: &SearchEntry) -> bool {
        let Some((attr, mask)) = self.enabled_attr() else {
            return false;
        };
        first(&entry.attrs, attr)
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|flags| flags & mask != 0)
    }

    /// Run `f` on a service connection; `f` says whether it left the
    /// connection bound as the service account (then it goes back to the
    /// pool; else it is dropped).
    async fn with_service<T>(
        &self,
        f: impl AsyncFnOnce(&mut Ldap) -> (Result<T, ProviderError>, bool),
    ) -> Result<T, ProviderError> {
        let mut ldap = self.service().await?;
        let (result, healthy) = f(&mut ldap).await;
        if healthy {
            self.give_back(ldap);
        }
        result
    }

    /// Check a login name and password; the principal with its groups.
    pub async fn login(&self, username: &str, password: &str) -> Result<Principal, ProviderError> {
        if password.is_empty() || username.is_empty() || username.len() > 256 {
            return Err(ProviderError::Invalid);
        }
        self.with_service(async |ldap| {
            let filter = self.user_filter(&format!(
                "({}={})",
                ldap_escape(self.login_attr()),
                ldap_escape(username)
            ));
            let found = match self
                .search(
                    ldap,
                    &self.config.user_search_base,
                    Scope::Subtree,
                    &filter,
                    self.user_attrs(),
                    2,
                )
                .await
            {
                Ok(found) => found,
                Err(e) => return (Err(e), false),
            };
            let Ok([entry]) = <[SearchEntry; 1]>::try_from(found) else {
                return (Err(ProviderError::Invalid), true);
            };
            if self.disabled(&entry) {
                return (Err(ProviderError::Invalid), true);
            }
            // The user's bind, on this connection; then back to the
            // service account (if that fails, the connection is dropped).
            let user_ok = match ldap
                .with_timeout(self.timeout())
                .simple_bind(&entry.dn, password)
                .await
            {
                Ok(r) => r.rc == 0,
                Err(e) => return (Err(ProviderError::unavailable(e)), false),
            };
            if let Err(e) = self.bind_service(ldap).await {
                return (Err(if user_ok { e } else { ProviderError::Invalid }), false);
            }
            if !user_ok {
                return (Err(ProviderError::Invalid), true);
            }
            match self.groups_of(ldap, &entry).await {
                Ok(groups) => (Ok(self.principal(&entry, groups)), true),
                Err(e) => (Err(e), false),
            }
        })
        .await
    }

    fn principal(&self, entry: &SearchEntry, groups: Vec<String>) -> Principal {
        Principal {
            provider: self.provider.clone(),
            id: principals::user_id(&self.provider, &entry.dn),
            login: principals::printable(
                first(&entry.attrs, self.login_attr()).unwrap_or(&entry.dn),
            ),
            display_name: first(&entry.attrs, self.name_attr()).map(principals::printable),
            groups: groups
                .iter()
                .map(|dn| principals::group_id(&self.provider, dn))
                .collect(),
            issuer: None,
        }
    }

    /// The user as the directory has them now: `None` if gone or disabled.
    pub async fn refresh(&self, user_dn: &str) -> Result<Option<Principal>, ProviderError> {
        self.with_service(async |ldap| {
            let found = match self
                .search(
                    ldap,
                    user_dn,
                    Scope::Base,
                    &self.user_filter(""),
                    self.user_attrs(),
                    1,
                )
                .await
            {
                Ok(found) => found,
                Err(e) => return (Err(e), false),
            };
            let Some(entry) = found.into_iter().next() else {
                return (Ok(None), true);
            };
            if self.disabled(&entry) {
                return (Ok(None), true);
            }
            match self.groups_of(ldap, &entry).await {
                Ok(groups) => (Ok(Some(self.principal(&entry, groups))), true),
                Err(e) => (Err(e), false),
            }
        })
        .await
    }

    /// The DNs of the user's groups, nested ones included if asked; sorted.
    async fn groups_of(
        &self,
        ldap: &mut Ldap,
        user: &SearchEntry,
    ) -> Result<Vec<String>, ProviderError> {
        let class = ldap_escape(self.group_class()).into_owned();
        let mut found: BTreeSet<String> = BTreeSet::new();
        let direct: Vec<String> = if self.uses_member_of() {
            all(&user.attrs, "memberOf").to_vec()
        } else {
            let value = match self.config.group_member_user_attribute.as_deref() {
                Some(a)
                    if !a.eq_ignore_ascii_case("dn")
                        && !a.eq_ignore_ascii_case("distinguishedName")
                        && !a.eq_ignore_ascii_case("entryDN") =>
                {
                    match first(&user.attrs, a) {
                        Some(v) => v.to_owned(),
                        None => return Ok(Vec::new()),
                    }
                }
                _ => user.dn.clone(),
            };
            let filter = format!(
                "(&(objectClass={class})({}={}))",
                ldap_escape(self.member_attr()),
                ldap_escape(&value)
            );
            self.search(
                ldap,
                self.group_base(),
                Scope::Subtree,
                &filter,
                vec!["1.1"],
                0,
            )
            .await?
            .into_iter()
            .map(|e| e.dn)
            .collect()
        };
        let mut level: Vec<String> = direct
            .into_iter()
            .filter(|d| found.insert(d.clone()))
            .collect();
        if self.config.nested_group_membership_enabled {
            // Parents are found through their `member` values (AD groups
            // list members too).
            let member = if self.uses_member_of() {
                "member"
            } else {
                self.member_attr()
            };
            let depth = self.config.nested_group_max_depth.unwrap_or(5);
            for _ in 0..depth {
                let mut next = Vec::new();
                for chunk in level.chunks(NESTED_BATCH) {
                    let any: String = chunk
                        .iter()
                        .map(|dn| format!("({}={})", ldap_escape(member), ldap_escape(dn)))
                        .collect();
                    let filter = format!("(&(objectClass={class})(|{any}))");
                    for e in self
                        .search(
                            ldap,
                            self.group_base(),
                            Scope::Subtree,
                            &filter,
                            vec!["1.1"],
                            0,
                        )
                        .await?
                    {
                        if found.insert(e.dn.clone()) {
                            next.push(e.dn);
                        }
                    }
                }
                if next.is_empty() {
                    break;
                }
                level = next;
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Users and groups whose names contain `query`, for pickers.
    pub async fn search_principals(&self, query: &str) -> Result<Vec<super::Found>, ProviderError> {
        let q = ldap_escape(query).into_owned();
        let users = self.user_filter(&format!(
            "(|({}=*{q}*)({}=*{q}*))",
            ldap_escape(self.login_attr()),
            ldap_escape(self.name_attr())
        ));
        let groups = format!(
            "(&(objectClass={})({}=*{q}*))",
            ldap_escape(self.group_class()),
            ldap_escape(self.group_name_attr())
        );
        self.with_service(async |ldap| {
            let base = &self.config.user_search_base;
            let found_users = self
                .search(
                    ldap,
                    base,
                    Scope::Subtree,
                    &users,
                    self.user_attrs(),
                    SEARCH_LIMIT,
                )
                .await;
            let found_groups = match &found_users {
                Ok(_) => {
                    self.search(
                        ldap,
                        self.group_base(),
                        Scope::Subtree,
                        &groups,
                        vec![self.group_name_attr()],
                        SEARCH_LIMIT,
                    )
                    .await
                }
                Err(_) => Ok(Vec::new()),
            };
            let (found_users, found_groups) = match (found_users, found_groups) {
                (Ok(u), Ok(g)) => (u, g),
                (Err(e), _) | (_, Err(e)) => return (Err(e), false),
            };
            let mut out: Vec<super::Found> = found_users
                .into_iter()
                .map(|e| super::Found {
                    id: principals::user_id(&self.provider, &e.dn),
                    kind: "user",
                    name: principals::printable(
                        first(&e.attrs, self.login_attr()).unwrap_or(&e.dn),
                    ),
                    display_name: first(&e.attrs, self.name_attr()).map(principals::printable),
                })
                .collect();
            out.extend(found_groups.into_iter().map(|e| super::Found {
                id: principals::group_id(&self.provider, &e.dn),
                kind: "group",
                name: principals::printable(
                    first(&e.attrs, self.group_name_attr()).unwrap_or(&e.dn),
                ),
                display_name: None,
            }));
            (Ok(out), true)
        })
        .await
    }
}

/// An attribute's values (attribute names compared without case).
fn all<'a>(attrs: &'a HashMap<String, Vec<String>>, name: &str) -> &'a [String] {
    attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or(&[], |(_, v)| v.as_slice())
}

/// An attribute's first value.
fn first<'a>(attrs: &'a HashMap<String, Vec<String>>, name: &str) -> Option<&'a str> {
    all(attrs, name).first().map(String::as_str)
}
