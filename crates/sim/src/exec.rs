//! `pods/exec` over WebSocket with the `v5.channel.k8s.io` protocol (what
//! kubectl 1.31+ speaks; `v4.channel.k8s.io` too). Binary frames carry a
//! channel byte first: 0 stdin, 1 stdout, 2 stderr, 3 the closing Status,
//! 4 terminal resize, 255 "close this channel" (v5).
//!
//! A tiny built-in command set runs: `echo ARGS…`, `hostname`, `env`,
//! `cat` (stdin back to stdout until stdin closes), `date`, `true`,
//! `false`, and `sh -c "echo …"`. Anything else exits 127, reported as kube
//! reports a non-zero exit (`NonZeroExitCode` with an `ExitCode` cause).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::response::Response;
use bytes::Bytes;
use drover_apiserver::ApiError;
use serde_json::{json, Value};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

struct Request_ {
    command: Vec<String>,
    container: Option<String>,
    stdin: bool,
}

fn parse(query: &str) -> Request_ {
    let mut r = Request_ {
        command: Vec::new(),
        container: None,
        stdin: false,
    };
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "command" => r.command.push(v.into_owned()),
            "container" => r.container = Some(v.into_owned()).filter(|c| !c.is_empty()),
            "stdin" => r.stdin = v == "true" || v == "1",
            _ => {}
        }
    }
    r
}

/// Turns true when the simulator stops; open sessions end then. Upgraded
/// connections leave the HTTP server, so its shutdown does not reach them.
#[derive(Clone)]
pub(crate) struct Stopping(pub(crate) tokio::sync::watch::Receiver<bool>);

/// Upgrade the request and run the command.
pub(crate) async fn exec(pod: Value, req: Request) -> Result<Response, ApiError> {
    let args = parse(req.uri().query().unwrap_or_default());
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
    let env: Vec<String> = container["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|v| {
                    Some(format!(
                        "{}={}",
                        v["name"].as_str()?,
                        v["value"].as_str().unwrap_or_default()
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let context = Context {
        hostname: name,
        env,
        stdin: args.stdin,
    };
    let command = args.command;
    Ok(upgrade
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| async move {
            let stopped = async move {
                match stopping {
                    Some(Stopping(mut rx)) => {
                        let _ = rx.wait_for(|stopping| *stopping).await;
                    }
                    None => std::future::pending().await,
                }
            };
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
    hostname: String,
    env: Vec<String>,
    stdin: bool,
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

async fn run(mut socket: WebSocket, command: Vec<String>, ctx: Context) -> Result<(), axum::Error> {
    tokio::time::sleep(PROCESS_START).await;
    let (code, out, err) = match command[0].as_str() {
        "echo" => (0, format!("{}\n", command[1..].join(" ")), String::new()),
        "hostname" => (0, format!("{}\n", ctx.hostname), String::new()),
        "env" => {
            let mut lines = vec![
                format!("HOSTNAME={}", ctx.hostname),
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ];
            lines.extend(ctx.env.iter().cloned());
            (0, lines.join("\n") + "\n", String::new())
        }
        "date" => (
            0,
            format!("{}\n", drover_core::meta::now_rfc3339()),
            String::new(),
        ),
        "true" => (0, String::new(), String::new()),
        "false" => (1, String::new(), String::new()),
        "sh" if command.get(1).map(String::as_str) == Some("-c")
            && command.get(2).is_some_and(|c| c.starts_with("echo ")) =>
        {
            (
                0,
                format!(
                    "{}\n",
                    command[2]
                        .trim_start_matches("echo ")
                        .trim_matches(['"', '\''])
                ),
                String::new(),
            )
        }
        "cat" if ctx.stdin => {
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
            (0, String::new(), String::new())
        }
        "cat" => (0, String::new(), String::new()),
        other => (
            127,
            String::new(),
            format!("exec: \"{other}\": executable file not found in $PATH\n"),
        ),
    };
    if !out.is_empty() {
        socket.send(frame(STDOUT, out.as_bytes())).await?;
    }
    if !err.is_empty() {
        socket.send(frame(STDERR, err.as_bytes())).await?;
    }
    let status = if code == 0 {
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
