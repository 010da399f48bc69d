//! `pods/exec` over WebSocket with the `v5.channel.k8s.io` protocol (what
//! kubectl 1.31+ speaks; `v4.channel.k8s.io` too). Binary frames carry a
//! channel byte first: 0 stdin, 1 stdout, 2 stderr, 3 the closing Status,
//! 4 terminal resize, 255 "close this channel" (v5).
//!
//! `pods/attach` runs the container's own command line the same way.
//!
//! Commands run in a simulated container (`container`): a small
//! BusyBox-like userland with kube's exit codes, reported as kube reports
//! a non-zero exit (`NonZeroExitCode` with an `ExitCode` cause). `sh`
//! (or `bash`) with stdin is an interactive shell; with `tty` it echoes
//! what is typed and shows a prompt, as a terminal in a browser needs.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::response::Response;
use bytes::Bytes;
use drover_apiserver::ApiError;
use serde_json::{json, Value};

use crate::container::{Container, Output};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;
/// The longest line the simulated shell reads.
const LINE_LIMIT: usize = 64 * 1024;

struct Request_ {
    command: Vec<String>,
    container: Option<String>,
    stdin: bool,
    tty: bool,
}

fn parse(query: &str) -> Request_ {
    let mut r = Request_ {
        command: Vec::new(),
        container: None,
        stdin: false,
        tty: false,
    };
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "command" => r.command.push(v.into_owned()),
            "container" => r.container = Some(v.into_owned()).filter(|c| !c.is_empty()),
            "stdin" => r.stdin = v == "true" || v == "1",
            "tty" => r.tty = v == "true" || v == "1",
            _ => {}
        }
    }
    r
}

/// Turns true when the simulator stops; open sessions end then. Upgraded
/// connections leave the HTTP server, so its shutdown does not reach them.
#[derive(Clone)]
pub(crate) struct Stopping(pub(crate) tokio::sync::watch::Receiver<bool>);

/// Resolves when the simulator stops (never without a [`Stopping`]).
pub(crate) async fn stopped(stopping: Option<Stopping>) {
    match stopping {
        Some(Stopping(mut rx)) => {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
        None => std::future::pending().await,
    }
}

/// Upgrade the request and run the command.
pub(crate) async fn exec(pod: Value, req: Request) -> Result<Response, ApiError> {
    session(pod, req, false).await
}

/// `pods/attach`: the container's own process, over the same protocol: its
/// command and args (a shell when it has none), interactive with stdin.
pub(crate) async fn attach(pod: Value, req: Request) -> Result<Response, ApiError> {
    session(pod, req, true).await
}

/// The container's own command line: command then args; `sh` when the
/// image's default is all it has.
pub(crate) fn entrypoint(container: &Value) -> Vec<String> {
    let words: Vec<String> = ["command", "args"]
        .iter()
        .flat_map(|f| container[*f].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    if words.is_empty() {
        vec!["sh".to_owned()]
    } else {
        words
    }
}

async fn session(pod: Value, req: Request, attach: bool) -> Result<Response, ApiError> {
    let mut args = parse(req.uri().query().unwrap_or_default());
    let stopping = req.extensions().get::<Stopping>().cloned();
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let containers: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let container = match &args.container {
        Some(c) => containers
            .iter()
            .find(|x| x["name"] == c.as_str())
            .cloned()
            .ok_or_else(|| {
                ApiError::bad_request(format!("container {c} is not valid for pod {name}"))
            })?,
        None => containers
            .first()
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("pod {name} has no containers")))?,
    };
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade connection: container not found ({:?})",
            container["name"]
        )));
    }
    if attach {
        args.command = entrypoint(&container);
    }
    if args.command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let (mut parts, _body) = req.into_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|_| {
            ApiError::bad_request(
                "exec needs a WebSocket upgrade with the v5.channel.k8s.io protocol",
            )
        })?;
    let context = Context {
        container: Container::new(&pod, &container),
        stdin: args.stdin,
        tty: args.tty,
        attach,
    };
    let command = args.command;
    Ok(upgrade
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| async move {
            let stopped = stopped(stopping);
            tokio::select! {
                result = run(socket, command, context) => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "exec session ended with an error");
                    }
                }
                () = stopped => tracing::debug!("exec session closed: the simulator is stopping"),
            }
        }))
}

struct Context {
    container: Container,
    stdin: bool,
    tty: bool,
    /// An attach: the stream ends as the process does, with no exit code
    /// (kubectl reads the pod's state instead).
    attach: bool,
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

/// How long the simulated container takes to start the command. A real exec
/// starts a process first (tens of milliseconds with runc), and kubectl
/// relies on that: its client opens its streams only after the WebSocket is
/// up and discards frames for a stream it has not opened yet (client-go's
/// `wsStreamCreator`), so output sent at once can be lost.
const PROCESS_START: std::time::Duration = std::time::Duration::from_millis(20);

async fn run(
    mut socket: WebSocket,
    command: Vec<String>,
    mut ctx: Context,
) -> Result<(), axum::Error> {
    tokio::time::sleep(PROCESS_START).await;
    let result = if ctx.stdin && Container::is_shell(&command) {
        shell(&mut socket, &mut ctx).await?
    } else if ctx.stdin && command.len() == 1 && command[0].rsplit('/').next() == Some("cat") {
        // Echo stdin until the client closes it.
        while let Some(msg) = socket.recv().await {
            match msg? {
                Message::Binary(b) if b.first() == Some(&STDIN) => {
                    socket.send(frame(STDOUT, &b[1..])).await?
                }
                Message::Binary(b) if b.first() == Some(&CLOSE) => break,
                Message::Close(_) => return Ok(()),
                _ => {}
            }
        }
        Output::default()
    } else {
        let out = ctx.container.exec(&command);
        if !out.took.is_zero() {
            tokio::time::sleep(out.took).await;
        }
        out
    };
    let code = result.code;
    let (out, err) = if ctx.tty {
        // A terminal has one stream, with CR LF line ends.
        (tty_text(&(result.out + &result.err)), String::new())
    } else {
        (result.out, result.err)
    };
    if !out.is_empty() {
        socket.send(frame(STDOUT, out.as_bytes())).await?;
    }
    if !err.is_empty() {
        socket.send(frame(STDERR, err.as_bytes())).await?;
    }
    let status = if code == 0 || ctx.attach {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure", "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    };
    socket
        .send(frame(ERROR, status.to_string().as_bytes()))
        .await?;
    // A normal closure (1000): kubectl reads it as the end of every stream.
    socket
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await?;
    Ok(())
}

fn tty_text(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// An interactive shell: lines from stdin run one by one. With a tty it
/// echoes what is typed (with backspace), shows a prompt, and ends on
/// `exit` or Ctrl-D; without one it ends when stdin closes. Returns the
/// last command's outcome (output already sent).
async fn shell(socket: &mut WebSocket, ctx: &mut Context) -> Result<Output, axum::Error> {
    let mut line: Vec<u8> = Vec::new();
    let mut last = Output::default();
    if ctx.tty {
        let prompt = ctx.container.prompt();
        socket.send(frame(STDOUT, prompt.as_bytes())).await?;
    }
    while let Some(msg) = socket.recv().await {
        let data = match msg? {
            Message::Binary(b) if b.first() == Some(&STDIN) => b.slice(1..),
            Message::Binary(b) if b.first() == Some(&CLOSE) => break,
            Message::Close(_) => break,
            // Resizes (channel 4) and anything else change nothing here.
            _ => continue,
        };
        let mut echo: Vec<u8> = Vec::new();
        for &byte in data.iter() {
            match byte {
                b'\r' | b'\n' => {
                    if ctx.tty {
                        echo.extend_from_slice(b"\r\n");
                    }
                    let text = String::from_utf8_lossy(&line).into_owned();
                    line.clear();
                    if !echo.is_empty() {
                        socket.send(frame(STDOUT, &echo)).await?;
                        echo.clear();
                    }
                    let out = ctx.container.sh(&text);
                    if !out.took.is_zero() {
                        tokio::time::sleep(out.took).await;
                    }
                    if ctx.tty {
                        let mut text = tty_text(&(out.out.clone() + &out.err));
                        if !out.exit {
                            text.push_str(&ctx.container.prompt());
                        }
                        socket.send(frame(STDOUT, text.as_bytes())).await?;
                    } else {
                        if !out.out.is_empty() {
                            socket.send(frame(STDOUT, out.out.as_bytes())).await?;
                        }
                        if !out.err.is_empty() {
                            socket.send(frame(STDERR, out.err.as_bytes())).await?;
                        }
                    }
                    let exit = out.exit;
                    last = Output {
                        code: out.code,
                        ..Default::default()
                    };
                    if exit {
                        return Ok(last);
                    }
                }
                // Backspace or DEL: drop the last character.
                0x08 | 0x7f if ctx.tty => {
                    if line.pop().is_some() {
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                // Ctrl-C: drop the line.
                0x03 if ctx.tty => {
                    line.clear();
                    echo.extend_from_slice(b"^C\r\n");
                    echo.extend_from_slice(ctx.container.prompt().as_bytes());
                }
                // Ctrl-D on an empty line ends the shell.
                0x04 if ctx.tty && line.is_empty() => {
                    if !echo.is_empty() {
                        socket.send(frame(STDOUT, &echo)).await?;
                    }
                    socket.send(frame(STDOUT, b"exit\r\n")).await?;
                    return Ok(last);
                }
                // A line longer than a shell takes is dropped.
                _ if line.len() >= LINE_LIMIT => {
                    line.clear();
                    let msg = b"\r\nsh: line too long\r\n";
                    echo.extend_from_slice(msg);
                }
                b => {
                    line.push(b);
                    if ctx.tty {
                        echo.push(b);
                    }
                }
            }
        }
        if !echo.is_empty() {
            socket.send(frame(STDOUT, &echo)).await?;
        }
    }
    Ok(last)
}
