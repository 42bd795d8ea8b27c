//! The gate: smart-HTTP requests in, git children and upstream round trips out.
//!
//! Hazard: a push that reaches upstream before its scan, or a mirror whose refs move
//! although upstream refused, breaks the one promise of the gate. A push goes through
//! these stages, each a short function, in this order and under the repository's push
//! lock: parse the commands ([`crate::receive`]) → `index-pack` the pack into a fresh
//! quarantine → scan the new blobs ([`crate::scan`]) → on findings, reject or hold for
//! an exception → push upstream from the quarantine (token injected, each ref leased
//! to the value the client saw) → only for the refs upstream accepted, migrate the
//! quarantine's packs into the mirror and move its refs. A rejected push leaves no
//! object and no ref behind (the quarantine is deleted).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bottle_pipelock::approvals::{ApprovalClient, HoldRequest, Outcome};
use bottle_pipelock::{Detection, Pipelock};
use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::mirror::{Mirror, Quarantine};
use crate::process::{Git, check, tail_lines};
use crate::receive::{self, Command, PushRequest, ZERO_ID};
use crate::report::{self, BYPASS_OPTION, Located};
use crate::scan::{self, BlobFinding, ObjectView, ScanLimits, ScanOutcome};
use crate::{GitGateError, pktline};

/// Every response body the gate sends.
pub type Body = BoxBody<Bytes, Infallible>;

/// A body fed chunk by chunk from a task.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

fn streamed() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel(16);
    (tx, ChannelBody(rx).boxed())
}

/// A whole body.
pub fn full(data: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(data.into()).boxed()
}

/// A plain-text answer (git shows a `text/plain` error body as `remote:` lines).
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(full(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn git_response(kind: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(kind));
    headers
        .insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-cache"));
    response
}

/// The shared state of one running gate.
#[derive(Debug)]
pub struct GitGate {
    /// Runs git.
    pub git: Git,
    /// The mirrors by name.
    pub mirrors: BTreeMap<String, Arc<Mirror>>,
    /// The scanner (rules plus the bottle's known secrets).
    pub pipelock: Arc<Pipelock>,
    /// Scan caps.
    pub limits: ScanLimits,
    /// Request body cap.
    pub max_body: u64,
    /// Budget of one upload-pack.
    pub serve_timeout: Duration,
    /// The approval queue, when there is one.
    pub approvals: Option<ApprovalClient>,
    /// This bottle's name.
    pub bottle: String,
    /// Secret values to scrub from anything shown (upstream error text).
    pub scrub: Vec<String>,
}

impl GitGate {
    /// The mirror of a declared repository.
    pub fn mirror(&self, name: &str) -> Option<&Arc<Mirror>> {
        self.mirrors.get(name)
    }

    fn scrubbed(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.scrub {
            if !secret.is_empty() {
                out = out.replace(secret.as_str(), "<redacted>");
            }
        }
        out
    }

    /// A refresh failure as the agent sees it.
    fn upstream_failure(&self, mirror: &Mirror, err: &GitGateError) -> Response<Body> {
        tracing::warn!(repo = %mirror.name, error = %self.scrubbed(&err.to_string()), "Upstream fetch failed; refusing to serve the mirror.");
        text(
            StatusCode::BAD_GATEWAY,
            &format!(
                "bottle: git-gate: cannot refresh {} from upstream, refusing to serve stale data: {}",
                mirror.name,
                self.scrubbed(&err.to_string())
            ),
        )
    }

    /// `GET info/refs?service=git-upload-pack`.
    pub async fn advertise_upload(
        &self,
        mirror: &Mirror,
        protocol: Option<&str>,
    ) -> Response<Body> {
        if let Err(err) = mirror.refresh(&self.git).await {
            return self.upstream_failure(mirror, &err);
        }
        let mut inv = self.git.command(
            "upload-pack",
            [
                "upload-pack".to_string(),
                "--stateless-rpc".into(),
                "--advertise-refs".into(),
                mirror.dir.display().to_string(),
            ],
        );
        let v2 = protocol == Some("version=2");
        if let Some(p) = protocol {
            inv = inv.env("GIT_PROTOCOL", p);
        }
        let out = match inv
            .timeout(Duration::from_secs(60))
            .output(None, 256 * 1024 * 1024)
            .await
            .and_then(|o| check("upload-pack", o))
        {
            Ok(out) => out,
            Err(err) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("bottle: git-gate: {err}"),
                );
            }
        };
        let mut body = Vec::new();
        if !v2 {
            body.extend(pktline::data(b"# service=git-upload-pack\n"));
            body.extend_from_slice(pktline::FLUSH);
        }
        body.extend(out.stdout);
        git_response("application/x-git-upload-pack-advertisement", full(body))
    }

    /// `GET info/refs?service=git-receive-pack`: the mirror's refs, fresh from
    /// upstream, with the capabilities the gate implements.
    pub async fn advertise_receive(&self, mirror: &Mirror) -> Response<Body> {
        if let Err(err) = mirror.refresh(&self.git).await {
            return self.upstream_failure(mirror, &err);
        }
        let refs = match mirror.refs(&self.git).await {
            Ok(refs) => refs,
            Err(err) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("bottle: git-gate: {err}"),
                );
            }
        };
        git_response(
            "application/x-git-receive-pack-advertisement",
            full(receive_advertisement(&refs)),
        )
    }

    /// `POST git-upload-pack`: git upload-pack on the mirror, streamed back.
    pub async fn upload_pack(
        &self,
        mirror: &Mirror,
        body: Bytes,
        protocol: Option<&str>,
    ) -> Response<Body> {
        let mut inv = self
            .git
            .command(
                "upload-pack",
                [
                    "upload-pack".to_string(),
                    "--stateless-rpc".into(),
                    mirror.dir.display().to_string(),
                ],
            )
            .timeout(self.serve_timeout);
        if let Some(p) = protocol {
            inv = inv.env("GIT_PROTOCOL", p);
        }
        let mut running = match inv.spawn(true) {
            Ok(r) => r,
            Err(err) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("bottle: git-gate: {err}"),
                );
            }
        };
        let (Some(mut stdin), Some(mut stdout)) = (running.stdin.take(), running.stdout.take())
        else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bottle: git-gate: upload-pack has no pipes",
            );
        };
        tokio::spawn(async move {
            let _ = stdin.write_all(&body).await;
        });
        let (tx, response_body) = streamed();
        let deadline = running.deadline();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match tokio::time::timeout_at(deadline, stdout.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => n,
                    Err(_) => {
                        let _ = running.timed_out();
                        return;
                    }
                };
                // The agent hung up: dropping `running` kills upload-pack.
                if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
            }
            match running.wait().await {
                Ok((status, _)) if status.success() => {}
                Ok((status, stderr)) => {
                    tracing::warn!(%status, stderr = %tail_lines(&stderr, 3), "upload-pack failed.")
                }
                Err(err) => tracing::warn!(error = %err, "upload-pack did not finish."),
            }
        });
        git_response("application/x-git-upload-pack-result", response_body)
    }

    /// `POST git-receive-pack`: the push, streamed back as `remote:` lines and a status.
    pub async fn receive_pack(
        self: &Arc<Self>,
        mirror: Arc<Mirror>,
        body: Bytes,
    ) -> Response<Body> {
        // git probes with a bare flush before sending a body larger than its post
        // buffer (chunked): receive-pack answers it with nothing, and so do we.
        if body.as_ref() == pktline::FLUSH {
            return git_response("application/x-git-receive-pack-result", full(Bytes::new()));
        }
        let request = match receive::parse(&body) {
            Ok(r) => r,
            Err(err) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("bottle: git-gate: malformed push: {err}"),
                );
            }
        };
        let (tx, response_body) = streamed();
        let gate = self.clone();
        tokio::spawn(async move {
            let _serial = mirror.push_lock.lock().await;
            let mut push = Push { gate: &gate, mirror: &mirror, request: &request, tx: &tx };
            let tail = push.run(&body).await;
            let _ = tx.send(Bytes::from(tail)).await;
        });
        git_response("application/x-git-receive-pack-result", response_body)
    }
}

/// The receive-pack advertisement for `refs`, with [`receive::CAPABILITIES`].
pub fn receive_advertisement(refs: &[(String, String)]) -> Vec<u8> {
    let mut body = pktline::data(b"# service=git-receive-pack\n");
    body.extend_from_slice(pktline::FLUSH);
    let caps = receive::CAPABILITIES;
    match refs.split_first() {
        None => {
            body.extend(pktline::data(format!("{ZERO_ID} capabilities^{{}}\0{caps}\n").as_bytes()))
        }
        Some(((id, name), rest)) => {
            body.extend(pktline::data(format!("{id} {name}\0{caps}\n").as_bytes()));
            for (id, name) in rest {
                body.extend(pktline::data(format!("{id} {name}\n").as_bytes()));
            }
        }
    }
    body.extend_from_slice(pktline::FLUSH);
    body
}

/// One push in flight.
struct Push<'a> {
    gate: &'a GitGate,
    mirror: &'a Mirror,
    request: &'a PushRequest,
    tx: &'a mpsc::Sender<Bytes>,
}

type RefResults = Vec<(String, Result<(), String>)>;

impl Push<'_> {
    async fn say(&self, line: &str) {
        let _ = self.tx.send(Bytes::from(report::message(self.request, line))).await;
    }

    fn all(&self, why: &str) -> RefResults {
        self.request.commands.iter().map(|c| (c.refname.clone(), Err(why.to_string()))).collect()
    }

    /// Runs the stages; answers the response's status block.
    async fn run(&mut self, body: &[u8]) -> Vec<u8> {
        let request = self.request;
        let refuse_options =
            request.options.iter().find(|o| o.split('=').next() != Some(BYPASS_OPTION));
        if let Some(option) = refuse_options {
            self.say(&format!(
                "bottle: push rejected: unknown push option {:?} (only {BYPASS_OPTION}=<why>)",
                report::printable(option)
            ))
            .await;
            return report::status_block(request, None, &self.all("unknown push option"));
        }
        let quarantine = match Quarantine::create(&self.mirror.objects()) {
            Ok(q) => q,
            Err(err) => {
                return report::status_block(
                    request,
                    Some(&err.to_string()),
                    &self.all("gate error"),
                );
            }
        };
        let pack = &body[request.pack_offset..];
        if !pack.is_empty()
            && let Err(err) = self.index_pack(&quarantine, pack).await
        {
            self.say(&format!("bottle: cannot unpack the push: {err}")).await;
            return report::status_block(
                request,
                Some("index-pack failed"),
                &self.all("unpacker error"),
            );
        }
        let view = ObjectView {
            git_dir: self.mirror.dir.display().to_string(),
            env: quarantine.env().to_vec(),
        };
        match self.scan_and_decide(&view).await {
            Ok(()) => {}
            Err(why) => return report::status_block(request, None, &self.all(&why)),
        }
        let results = self.forward(&view).await;
        self.update_mirror(&quarantine, &results).await;
        report::status_block(request, None, &results)
    }

    async fn index_pack(&self, quarantine: &Quarantine, pack: &[u8]) -> Result<(), GitGateError> {
        let mut inv = self.gate.git.command(
            "index-pack",
            [
                format!("--git-dir={}", self.mirror.dir.display()),
                "index-pack".into(),
                "--stdin".into(),
                "--fix-thin".into(),
                format!("--max-input-size={}", self.gate.max_body),
            ],
        );
        for (k, v) in quarantine.env() {
            inv = inv.env(k, v);
        }
        let out = inv.timeout(Duration::from_secs(600)).output(Some(pack), 1024 * 1024).await?;
        check("index-pack", out).map(|_| ())
    }

    /// Scans; on findings rejects or holds for an exception. `Err(reason)` refuses.
    async fn scan_and_decide(&self, view: &ObjectView) -> Result<(), String> {
        let tips: Vec<String> = self
            .request
            .commands
            .iter()
            .filter(|c| !c.is_delete())
            .map(|c| c.new.clone())
            .collect();
        let outcome = scan::scan_new_blobs(
            &self.gate.git,
            view,
            &tips,
            &self.gate.pipelock,
            self.gate.limits,
        )
        .await;
        let findings = match outcome {
            Ok(ScanOutcome::Scanned { findings, blobs, bytes }) if findings.is_empty() => {
                self.say(&format!(
                    "bottle: scanned {blobs} new blob(s), {bytes} bytes: no secrets"
                ))
                .await;
                return Ok(());
            }
            Ok(ScanOutcome::Scanned { findings, .. }) => findings,
            Ok(ScanOutcome::Refused(why)) => {
                self.say(&format!("bottle: push rejected: {why}")).await;
                return Err(why);
            }
            Err(err) => {
                let why = format!("secret scan failed: {err}");
                self.say(&format!("bottle: push rejected: {why}")).await;
                return Err(why);
            }
        };
        let located = self.locate(view, &tips, &findings).await;
        let bypass = self
            .request
            .options
            .iter()
            .find_map(|o| o.strip_prefix(BYPASS_OPTION)?.strip_prefix('='));
        let all_suppressed = findings.iter().all(|f| f.suppressed);
        if !all_suppressed && bypass.is_none() {
            for line in report::rejection(&located) {
                self.say(&line).await;
            }
            tracing::warn!(repo = %self.mirror.name, findings = findings.len(), "Push rejected: secret detected.");
            return Err("secret detected".into());
        }
        self.ask_exception(&located, bypass).await
    }

    /// The commit that brought each of the first findings.
    async fn locate<'f>(
        &self,
        view: &ObjectView,
        tips: &[String],
        findings: &'f [BlobFinding],
    ) -> Vec<Located<'f>> {
        let mut out = Vec::new();
        for (i, finding) in findings.iter().enumerate() {
            let commit = if i < report::MAX_LISTED {
                self.introducing_commit(view, tips, &finding.blob).await
            } else {
                None
            };
            out.push(Located { finding, commit });
        }
        out
    }

    async fn introducing_commit(
        &self,
        view: &ObjectView,
        tips: &[String],
        blob: &str,
    ) -> Option<String> {
        let mut args = vec![
            format!("--git-dir={}", view.git_dir),
            "log".into(),
            "--format=%H".into(),
            "--reverse".into(),
            format!("--find-object={blob}"),
        ];
        args.extend(tips.iter().cloned());
        args.extend(["--not".into(), "--all".into()]);
        let mut inv = self.gate.git.command("log", args).timeout(Duration::from_secs(60));
        for (k, v) in &view.env {
            inv = inv.env(k.clone(), v.clone());
        }
        let out = inv.output(None, 16 * 1024 * 1024).await.ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().next().filter(|l| receive::valid_id(l)).map(String::from)
    }

    /// A push with suppressed findings or a bypass request waits for the operator.
    async fn ask_exception(
        &self,
        located: &[Located<'_>],
        bypass: Option<&str>,
    ) -> Result<(), String> {
        let Some(client) = &self.gate.approvals else {
            let why = "an exception needs the approval queue, and this bottle has none";
            self.say(&format!("bottle: push rejected: {why}")).await;
            return Err(why.into());
        };
        let mut detections: Vec<Detection> = Vec::new();
        for l in located {
            if !detections.iter().any(|d| d.fingerprint == l.finding.detection.fingerprint) {
                detections.push(l.finding.detection.clone());
            }
        }
        let refs: Vec<&str> = self.request.commands.iter().map(|c| c.refname.as_str()).collect();
        let places: Vec<String> = report::finding_lines(located)
            .into_iter()
            .filter(|l| !l.starts_with("    "))
            .map(|l| l.trim().to_string())
            .collect();
        let reason = match bypass {
            Some(why) => format!("bypass requested: {}", report::printable(why)),
            None => "marked gitleaks:allow".into(),
        };
        let request = HoldRequest {
            bottle: self.gate.bottle.clone(),
            method: "GIT-PUSH".into(),
            host: format!("git-gate/{}", self.mirror.name),
            path: format!(" {} ({reason}): {}", refs.join(" "), places.join("; ")),
            detections,
        };
        self.say("bottle: push held: it contains secrets and asks for an exception").await;
        for line in report::finding_lines(located) {
            self.say(&line).await;
        }
        self.say("bottle: waiting for the operator (`bottle approvals`, then `bottle approve ID --reason ...` or `bottle reject ID --reason ...`)").await;
        match client.hold(request).await {
            Outcome::Approved { id } => {
                tracing::info!(repo = %self.mirror.name, %id, "Push exception approved.");
                self.say(&format!("bottle: exception {id} approved")).await;
                Ok(())
            }
            Outcome::Refused { id, why } => {
                let id = id.unwrap_or_else(|| "-".into());
                self.say(&format!(
                    "bottle: push rejected: exception {id} refused: {}",
                    report::printable(&why)
                ))
                .await;
                Err(format!("exception refused: {why}"))
            }
        }
    }

    /// Pushes upstream from the quarantine, each ref leased to what the client saw.
    async fn forward(&self, view: &ObjectView) -> RefResults {
        let url = self.mirror.upstream.url.render();
        let mut args: Vec<String> = vec!["push".into(), "--porcelain".into(), "--no-verify".into()];
        if self.request.atomic {
            args.push("--atomic".into());
        }
        for c in &self.request.commands {
            let expect = if c.is_create() { String::new() } else { c.old.clone() };
            args.push(format!("--force-with-lease={}:{expect}", c.refname));
        }
        args.push(url);
        args.extend(self.request.commands.iter().map(refspec));
        let mut inv = self.mirror.upstream_command(&self.gate.git, "push", args);
        for (k, v) in &view.env {
            inv = inv.env(k.clone(), v.clone());
        }
        let out = match inv.output(None, 16 * 1024 * 1024).await {
            Ok(out) => out,
            Err(err) => {
                let why = format!("upstream push failed: {}", self.gate.scrubbed(&err.to_string()));
                self.say(&format!("bottle: {why}")).await;
                return self.all(&why);
            }
        };
        let porcelain = parse_porcelain(&String::from_utf8_lossy(&out.stdout));
        let detail = self.gate.scrubbed(&tail_lines(&out.stderr, 4));
        if !out.status.success() && !detail.is_empty() {
            self.say(&format!("bottle: upstream: {detail}")).await;
        }
        self.request
            .commands
            .iter()
            .map(|c| {
                let result = match porcelain.get(&c.refname) {
                    Some(Ok(())) => Ok(()),
                    Some(Err(why)) => Err(format!("upstream rejected: {why}")),
                    None => Err(format!(
                        "upstream push failed: {}",
                        if detail.is_empty() { "no status" } else { &detail }
                    )),
                };
                (c.refname.clone(), result)
            })
            .collect()
    }

    /// Moves the quarantined objects into the mirror and its refs to what upstream
    /// accepted. A failure here only leaves the mirror behind upstream until the next
    /// refresh; it is logged.
    async fn update_mirror(&self, quarantine: &Quarantine, results: &RefResults) {
        let accepted: Vec<&Command> = self
            .request
            .commands
            .iter()
            .filter(|c| results.iter().any(|(r, res)| *r == c.refname && res.is_ok()))
            .collect();
        if accepted.is_empty() {
            return;
        }
        let _refs = self.mirror.refs_lock.lock().await;
        if let Err(err) = quarantine.migrate() {
            tracing::warn!(repo = %self.mirror.name, error = %err, "Cannot move pushed objects into the mirror.");
            return;
        }
        let mut input = String::new();
        for c in accepted {
            if c.is_delete() {
                input.push_str(&format!("delete {}\n", c.refname));
            } else {
                input.push_str(&format!("update {} {}\n", c.refname, c.new));
            }
        }
        let out = self
            .gate
            .git
            .command(
                "update-ref",
                [
                    format!("--git-dir={}", self.mirror.dir.display()),
                    "update-ref".into(),
                    "--stdin".into(),
                ],
            )
            .timeout(Duration::from_secs(60))
            .output(Some(input.as_bytes()), 64 * 1024)
            .await
            .and_then(|o| check("update-ref", o));
        if let Err(err) = out {
            tracing::warn!(repo = %self.mirror.name, error = %err, "Cannot move the mirror's refs after an accepted push.");
        }
    }
}

fn refspec(c: &Command) -> String {
    if c.is_delete() { format!(":{}", c.refname) } else { format!("{}:{}", c.new, c.refname) }
}

/// `git push --porcelain` lines: `<flag>\t<from>:<to>\t<summary>`; `!` is a rejection.
pub fn parse_porcelain(stdout: &str) -> BTreeMap<String, Result<(), String>> {
    let mut out = BTreeMap::new();
    for line in stdout.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(flag), Some(spec), summary) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some((_, to)) = spec.rsplit_once(':') else { continue };
        let result = if flag == "!" {
            Err(report::printable(summary.unwrap_or("rejected")))
        } else {
            Ok(())
        };
        out.insert(to.to_string(), result);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_lines_map_to_ref_results() {
        let stdout = "To https://example.com/r.git\n*\t1111:refs/heads/new\t[new branch]\n!\t2222:refs/heads/main\t[rejected] (stale info)\n=\t:refs/heads/same\t[up to date]\nDone\n";
        let parsed = parse_porcelain(stdout);
        assert_eq!(parsed["refs/heads/new"], Ok(()));
        assert_eq!(parsed["refs/heads/main"], Err("[rejected] (stale info)".into()));
        assert_eq!(parsed["refs/heads/same"], Ok(()));
    }

    #[test]
    fn the_receive_advertisement_of_an_empty_mirror_carries_the_capabilities() {
        let body = receive_advertisement(&[]);
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("001f# service=git-receive-pack\n0000"), "{text}");
        assert!(text.contains(&format!("{ZERO_ID} capabilities^{{}}\0report-status")), "{text}");
        assert!(text.ends_with("0000"));
    }
}
