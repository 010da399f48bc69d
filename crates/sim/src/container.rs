//! What runs inside a simulated container for `kubectl exec`: a small
//! BusyBox-like userland over an in-memory filesystem (`/etc/hostname`,
//! `/etc/hosts`, `/etc/resolv.conf`, the ServiceAccount mount, `/tmp`),
//! and a shell with `;`, `&&`, `||`, quotes, `$VAR` and `$?`.
//!
//! Exit codes are kube's: a command's own (1 for a missing file), 127 for
//! a command the shell cannot find, and 126 when the container runtime
//! cannot start the executable it was asked to run (as containerd reports
//! "executable file not found in $PATH").

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

/// What a command did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Output {
    pub(crate) code: i32,
    pub(crate) out: String,
    pub(crate) err: String,
    /// How long it ran (`sleep`).
    pub(crate) took: Duration,
    /// `exit` was run: the shell ends.
    pub(crate) exit: bool,
}

impl Output {
    fn ok(out: impl Into<String>) -> Self {
        Self {
            out: out.into(),
            ..Default::default()
        }
    }

    fn fail(code: i32, err: impl Into<String>) -> Self {
        Self {
            code,
            err: err.into(),
            ..Default::default()
        }
    }
}

/// The commands on the container's `$PATH`.
const COMMANDS: &[&str] = &[
    "cat", "cd", "date", "echo", "env", "exit", "false", "head", "hostname", "id", "ls", "mkdir",
    "printenv", "ps", "pwd", "rm", "sh", "sleep", "test", "[", "touch", "true", "uname", "wc",
    "which", "whoami", "ash", "bash",
];

/// A simulated container's state for one exec session.
#[derive(Debug)]
pub(crate) struct Container {
    hostname: String,
    env: Vec<(String, String)>,
    files: BTreeMap<String, String>,
    dirs: BTreeSet<String>,
    cwd: String,
    last: i32,
    /// How deep `sh -c` runs in `sh -c` (a limit stops runaway recursion).
    depth: usize,
}

impl Container {
    /// The container `container` of `pod`.
    pub(crate) fn new(pod: &Value, container: &Value) -> Self {
        let s = |p: &str| {
            pod.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let hostname = Some(s("/spec/hostname"))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| s("/metadata/name"));
        let ns = s("/metadata/namespace");
        let mut env = vec![
            (
                "PATH".to_owned(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ),
            ("HOSTNAME".to_owned(), hostname.clone()),
            ("HOME".to_owned(), "/root".to_owned()),
            (
                "KUBERNETES_SERVICE_HOST".to_owned(),
                crate::services::KUBERNETES_IP.to_owned(),
            ),
            ("KUBERNETES_SERVICE_PORT".to_owned(), "443".to_owned()),
        ];
        for v in container["env"].as_array().into_iter().flatten() {
            if let Some(name) = v["name"].as_str() {
                env.push((
                    name.to_owned(),
                    v["value"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        let ip = s("/status/podIP");
        let mut files = BTreeMap::new();
        files.insert("/etc/hostname".to_owned(), format!("{hostname}\n"));
        files.insert(
            "/etc/hosts".to_owned(),
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"),
        );
        files.insert(
            "/etc/resolv.conf".to_owned(),
            format!("search {ns}.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"),
        );
        files.insert(
            "/etc/os-release".to_owned(),
            "NAME=\"Drover Simulated Linux\"\nID=drover-sim\n".to_owned(),
        );
        files.insert(
            "/etc/passwd".to_owned(),
            "root:x:0:0:root:/root:/bin/sh\n".to_owned(),
        );
        let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
        files.insert(format!("{sa}/namespace"), ns.clone());
        let mut dirs: BTreeSet<String> = [
            "/",
            "/bin",
            "/dev",
            "/etc",
            "/home",
            "/proc",
            "/root",
            "/tmp",
            "/usr",
            "/usr/bin",
            "/var",
            "/var/run",
            "/var/run/secrets",
            "/var/run/secrets/kubernetes.io",
            sa,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            if let Some(path) = m["mountPath"].as_str() {
                add_parents(&mut dirs, path);
                dirs.insert(path.trim_end_matches('/').to_owned());
            }
        }
        let workdir = container["workingDir"].as_str().unwrap_or("/").to_owned();
        add_parents(&mut dirs, &workdir);
        dirs.insert(workdir.clone());
        Self {
            hostname,
            env,
            files,
            dirs,
            cwd: workdir,
            last: 0,
            depth: 0,
        }
    }

    /// Run `argv` as the container runtime would start it (no shell).
    pub(crate) fn exec(&mut self, argv: &[String]) -> Output {
        let Some(program) = argv.first() else {
            return Output::fail(126, "");
        };
        let name = program.rsplit('/').next().unwrap_or(program);
        if !self.known(program) {
            // containerd's answer for an executable it cannot start; it
            // reaches the client on stdout, as `kubectl exec` shows it.
            let why = if program.contains('/') && self.is_file(program) {
                format!("exec: \"{program}\": permission denied")
            } else if program.contains('/') {
                format!("exec: \"{program}\": stat {program}: no such file or directory")
            } else {
                format!("exec: \"{program}\": executable file not found in $PATH")
            };
            return Output {
                code: 126,
                out: format!("OCI runtime exec failed: exec failed: unable to start container process: {why}: unknown\r\n"),
                ..Default::default()
            };
        }
        let mut args = argv.to_vec();
        args[0] = name.to_owned();
        self.builtin(&args)
    }

    /// Whether `program` (a name or a path) is on this container.
    fn known(&self, program: &str) -> bool {
        match program.rsplit_once('/') {
            Some((dir, name)) => {
                matches!(
                    dir,
                    "/bin" | "/usr/bin" | "/sbin" | "/usr/sbin" | "/usr/local/bin"
                ) && COMMANDS.contains(&name)
            }
            None => COMMANDS.contains(&program),
        }
    }

    /// Whether `argv` asks for an interactive shell.
    pub(crate) fn is_shell(argv: &[String]) -> bool {
        argv.len() == 1 && matches!(argv[0].rsplit('/').next(), Some("sh" | "bash" | "ash"))
    }

    /// The prompt of an interactive shell.
    pub(crate) fn prompt(&self) -> String {
        format!("{}:{} # ", self.hostname, self.cwd)
    }

    /// Run one shell command line.
    pub(crate) fn sh(&mut self, line: &str) -> Output {
        if self.depth >= 16 {
            return Output::fail(2, "sh: too many nested shells\n");
        }
        self.depth += 1;
        let out = self.run_line(line);
        self.depth -= 1;
        out
    }

    fn run_line(&mut self, line: &str) -> Output {
        let mut total = Output::default();
        for (op, command) in split_list(line) {
            let run = match op {
                Connector::And => self.last == 0,
                Connector::Or => self.last != 0,
                Connector::Seq => true,
            };
            if !run {
                continue;
            }
            let words = match self.words(&command) {
                Ok(w) => w,
                Err(e) => {
                    self.last = 2;
                    total.err.push_str(&format!("sh: syntax error: {e}\n"));
                    total.code = 2;
                    return total;
                }
            };
            if words.is_empty() {
                continue;
            }
            let out = if self.known(&words[0]) {
                let mut args = words.clone();
                args[0] = words[0].rsplit('/').next().unwrap_or(&words[0]).to_owned();
                self.builtin(&args)
            } else {
                Output::fail(127, format!("sh: {}: not found\n", words[0]))
            };
            self.last = out.code;
            total.out.push_str(&out.out);
            total.err.push_str(&out.err);
            total.took += out.took;
            total.code = out.code;
            if out.exit {
                total.exit = true;
                break;
            }
        }
        total
    }

    /// Split a command into words: quotes, backslashes, `$VAR`, `${VAR}`, `$?`.
    fn words(&self, command: &str) -> Result<Vec<String>, String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut has_word = false;
        let mut chars = command.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    has_word = true;
                    loop {
                        match chars.next() {
                            Some('\'') => break,
                            Some(c) => word.push(c),
                            None => return Err("unterminated quoted string".into()),
                        }
                    }
                }
                '"' => {
                    has_word = true;
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => {
                                if let Some(n) = chars.next() {
                                    word.push(n);
                                }
                            }
                            Some('$') => word.push_str(&self.expand(&mut chars)),
                            Some(c) => word.push(c),
                            None => return Err("unterminated quoted string".into()),
                        }
                    }
                }
                '\\' => {
                    has_word = true;
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                }
                '$' => {
                    has_word = true;
                    word.push_str(&self.expand(&mut chars));
                }
                c if c.is_whitespace() => {
                    if has_word {
                        words.push(std::mem::take(&mut word));
                        has_word = false;
                    }
                }
                c => {
                    has_word = true;
                    word.push(c);
                }
            }
        }
        if has_word {
            words.push(word);
        }
        Ok(words)
    }

    fn expand(&self, chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
        if chars.peek() == Some(&'?') {
            chars.next();
            return self.last.to_string();
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if braced && chars.peek() == Some(&'}') {
            chars.next();
        }
        if name.is_empty() {
            return "$".to_owned();
        }
        self.var(&name).unwrap_or_default()
    }

    fn var(&self, name: &str) -> Option<String> {
        if name == "PWD" {
            return Some(self.cwd.clone());
        }
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn path(&self, p: &str) -> String {
        let joined = if p.starts_with('/') {
            p.to_owned()
        } else {
            format!("{}/{p}", self.cwd.trim_end_matches('/'))
        };
        let mut parts: Vec<&str> = Vec::new();
        for part in joined.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        format!("/{}", parts.join("/"))
    }

    fn is_file(&self, p: &str) -> bool {
        self.files.contains_key(&self.path(p))
    }

    fn is_dir(&self, p: &str) -> bool {
        self.dirs.contains(&self.path(p))
    }

    fn builtin(&mut self, argv: &[String]) -> Output {
        let args = &argv[1..];
        match argv[0].as_str() {
            "echo" => {
                let (newline, args) = match args.first().map(String::as_str) {
                    Some("-n") => (false, &args[1..]),
                    _ => (true, args),
                };
                Output::ok(args.join(" ") + if newline { "\n" } else { "" })
            }
            "true" => Output::ok(""),
            "false" => Output::fail(1, ""),
            "exit" => {
                let code = args
                    .first()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(self.last);
                Output {
                    code,
                    exit: true,
                    ..Default::default()
                }
            }
            "hostname" => Output::ok(format!("{}\n", self.hostname)),
            "whoami" => Output::ok("root\n"),
            "id" => Output::ok("uid=0(root) gid=0(root) groups=0(root)\n"),
            "uname" => Output::ok(if args.iter().any(|a| a == "-a") {
                format!(
                    "Linux {} 6.1.0-drover-sim #1 SMP x86_64 GNU/Linux\n",
                    self.hostname
                )
            } else {
                "Linux\n".to_owned()
            }),
            "date" => Output::ok(format!("{}\n", drover_core::meta::now_rfc3339())),
            "pwd" => Output::ok(format!("{}\n", self.cwd)),
            "env" => Output::ok(
                self.env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}\n"))
                    .collect::<String>(),
            ),
            "printenv" => match args.first() {
                None => self.builtin(&["env".to_owned()]),
                Some(name) => match self.var(name) {
                    Some(v) => Output::ok(format!("{v}\n")),
                    None => Output::fail(1, ""),
                },
            },
            "sleep" => match args.first().and_then(|n| n.parse::<f64>().ok()) {
                Some(n) if n >= 0.0 => Output {
                    took: Duration::from_secs_f64(n.min(3600.0)),
                    ..Default::default()
                },
                _ => Output::fail(1, "sleep: invalid number\n"),
            },
            "cd" => {
                let target = args.first().cloned().unwrap_or_else(|| "/root".to_owned());
                if self.is_dir(&target) {
                    self.cwd = self.path(&target);
                    Output::ok("")
                } else {
                    Output::fail(
                        2,
                        format!("sh: cd: can't cd to {target}: No such file or directory\n"),
                    )
                }
            }
            "cat" | "head" | "wc" => self.read_files(&argv[0], args),
            "ls" => self.ls(args),
            "mkdir" => {
                let mut out = Output::default();
                for d in args.iter().filter(|a| !a.starts_with('-')) {
                    let p = self.path(d);
                    if self.dirs.contains(&p) && !args.iter().any(|a| a == "-p") {
                        out.code = 1;
                        out.err.push_str(&format!(
                            "mkdir: can't create directory '{d}': File exists\n"
                        ));
                    } else {
                        add_parents(&mut self.dirs, &p);
                        self.dirs.insert(p);
                    }
                }
                out
            }
            "touch" => {
                for f in args {
                    let p = self.path(f);
                    self.files.entry(p).or_default();
                }
                Output::ok("")
            }
            "rm" => {
                let mut out = Output::default();
                for f in args.iter().filter(|a| !a.starts_with('-')) {
                    if self.files.remove(&self.path(f)).is_none() && !args.iter().any(|a| a == "-f")
                    {
                        out.code = 1;
                        out.err.push_str(&format!(
                            "rm: can't remove '{f}': No such file or directory\n"
                        ));
                    }
                }
                out
            }
            "test" | "[" => {
                let args: Vec<&str> = args
                    .iter()
                    .map(String::as_str)
                    .filter(|a| *a != "]")
                    .collect();
                let truth = match args.as_slice() {
                    ["-f", p] => self.is_file(p),
                    ["-d", p] => self.is_dir(p),
                    ["-e", p] => self.is_file(p) || self.is_dir(p),
                    ["-n", s] => !s.is_empty(),
                    ["-z", s] => s.is_empty(),
                    [a, "=", b] | [a, "==", b] => a == b,
                    [a, "!=", b] => a != b,
                    [s] => !s.is_empty(),
                    _ => false,
                };
                Output {
                    code: if truth { 0 } else { 1 },
                    ..Default::default()
                }
            }
            "which" => {
                let mut out = Output::default();
                for a in args {
                    if COMMANDS.contains(&a.as_str()) {
                        out.out.push_str(&format!("/bin/{a}\n"));
                    } else {
                        out.code = 1;
                    }
                }
                out
            }
            "ps" => Output::ok("PID   USER     TIME  COMMAND\n    1 root      0:00 /pause\n"),
            "sh" | "bash" | "ash" => match args.first().map(String::as_str) {
                Some("-c") => match args.get(1) {
                    Some(line) => self.sh(line),
                    None => Output::fail(2, "sh: -c requires an argument\n"),
                },
                Some(script) => {
                    let path = self.path(script);
                    match self.files.get(&path).cloned() {
                        Some(text) => {
                            let mut out = Output::default();
                            for line in text.lines() {
                                let o = self.sh(line);
                                out.out.push_str(&o.out);
                                out.err.push_str(&o.err);
                                out.code = o.code;
                                if o.exit {
                                    break;
                                }
                            }
                            out
                        }
                        None => Output::fail(
                            127,
                            format!("sh: can't open '{script}': No such file or directory\n"),
                        ),
                    }
                }
                // A shell with nothing to read ends at once.
                None => Output::ok(""),
            },
            other => Output::fail(127, format!("sh: {other}: not found\n")),
        }
    }

    fn read_files(&self, command: &str, args: &[String]) -> Output {
        let files: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        let mut out = Output::default();
        for f in files {
            let p = self.path(f);
            match self.files.get(&p) {
                Some(text) => match command {
                    "head" => {
                        for line in text.lines().take(10) {
                            out.out.push_str(line);
                            out.out.push('\n');
                        }
                    }
                    "wc" => out.out.push_str(&format!(
                        "{:>7} {:>7} {:>7} {f}\n",
                        text.lines().count(),
                        text.split_whitespace().count(),
                        text.len()
                    )),
                    _ => out.out.push_str(text),
                },
                None if self.dirs.contains(&p) => {
                    out.code = 1;
                    out.err
                        .push_str(&format!("{command}: read error: Is a directory\n"));
                }
                None => {
                    out.code = 1;
                    out.err.push_str(&format!(
                        "{command}: can't open '{f}': No such file or directory\n"
                    ));
                }
            }
        }
        out
    }

    fn ls(&self, args: &[String]) -> Output {
        let long = args.iter().any(|a| a.starts_with('-') && a.contains('l'));
        let mut targets: Vec<String> = args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .cloned()
            .collect();
        if targets.is_empty() {
            targets.push(".".to_owned());
        }
        let mut out = Output::default();
        for t in &targets {
            let p = self.path(t);
            if self.files.contains_key(&p) {
                out.out.push_str(&format!("{t}\n"));
                continue;
            }
            if !self.dirs.contains(&p) {
                out.code = 1;
                out.err
                    .push_str(&format!("ls: {t}: No such file or directory\n"));
                continue;
            }
            let prefix = if p == "/" {
                "/".to_owned()
            } else {
                format!("{p}/")
            };
            let child = |k: &String| {
                k.strip_prefix(&prefix)
                    .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                    .map(str::to_owned)
            };
            let mut entries: Vec<(String, bool)> = self
                .dirs
                .iter()
                .filter_map(child)
                .map(|n| (n, true))
                .chain(self.files.keys().filter_map(child).map(|n| (n, false)))
                .collect();
            entries.sort();
            for (name, dir) in entries {
                if long {
                    let (mode, size) = if dir {
                        ("drwxr-xr-x", 4096)
                    } else {
                        (
                            "-rw-r--r--",
                            self.files
                                .get(&format!("{prefix}{name}"))
                                .map_or(0, String::len),
                        )
                    };
                    out.out.push_str(&format!(
                        "{mode}    1 root     root      {size:>6} Jan  1 00:00 {name}\n"
                    ));
                } else {
                    out.out.push_str(&format!("{name}\n"));
                }
            }
        }
        out
    }
}

fn add_parents(dirs: &mut BTreeSet<String>, path: &str) {
    let mut p = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        p.push('/');
        p.push_str(part);
        dirs.insert(p.clone());
    }
    dirs.insert("/".to_owned());
}

#[derive(Debug, Clone, Copy)]
enum Connector {
    Seq,
    And,
    Or,
}

/// Split a command line at `;`, `&&` and `||` outside quotes.
fn split_list(line: &str) -> Vec<(Connector, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut next = Connector::Seq;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                current.push(c);
            }
            (None, ';') => {
                out.push((next, std::mem::take(&mut current)));
                next = Connector::Seq;
            }
            (None, '&') if chars.peek() == Some(&'&') => {
                chars.next();
                out.push((next, std::mem::take(&mut current)));
                next = Connector::And;
            }
            (None, '|') if chars.peek() == Some(&'|') => {
                chars.next();
                out.push((next, std::mem::take(&mut current)));
                next = Connector::Or;
            }
            (None, '#') if current.trim().is_empty() => break,
            (None, c) => current.push(c),
        }
    }
    out.push((next, current));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container() -> Container {
        let pod = json!({"metadata": {"name": "web-1", "namespace": "shop"}, "status": {"podIP": "10.244.0.5"}});
        Container::new(
            &pod,
            &json!({"name": "web", "env": [{"name": "GREETING", "value": "hi there"}]}),
        )
    }

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn exit_codes_are_those_of_a_real_container() {
        let mut c = container();
        assert_eq!(c.exec(&argv(&["echo", "hello"])).out, "hello\n");
        let missing = c.exec(&argv(&["cat", "/nope"]));
        assert_eq!(missing.code, 1);
        assert!(missing.err.contains("No such file or directory"));
        let absent = c.exec(&argv(&["nope"]));
        assert_eq!(absent.code, 126);
        assert!(absent.out.contains("executable file not found in $PATH"));
        assert_eq!(c.exec(&argv(&["sh", "-c", "nope"])).code, 127);
        assert_eq!(c.exec(&argv(&["sh", "-c", "exit 3"])).code, 3);
        assert_eq!(c.exec(&argv(&["ls", "/nope"])).code, 1);
        // A shell that runs itself stops, rather than the process.
        c.env.push(("X".into(), "sh -c \"$X\"".into()));
        assert_eq!(c.exec(&argv(&["sh", "-c", "sh -c \"$X\""])).code, 2);
    }

    #[test]
    fn the_shell_expands_and_chains() {
        let mut c = container();
        assert_eq!(
            c.sh("echo \"$GREETING\" && false || echo $?").out,
            "hi there\n1\n"
        );
        assert_eq!(c.sh("cd /etc; pwd; cat hostname").out, "/etc\nweb-1\n");
        assert_eq!(c.sh("echo 'a  b'   c").out, "a  b c\n");
        assert_eq!(
            c.sh("cat /var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .out,
            "shop"
        );
    }
}
