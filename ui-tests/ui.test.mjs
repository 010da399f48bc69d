// Browser tests of Drover's web UI, in Debian's chromium driven by
// playwright-core. Run by crates/drover/tests/ui.rs, which starts the
// server and the simulated clusters and passes:
//   DROVER_URL            https://127.0.0.1:PORT
//   DROVER_PASSWORD       the admin password
//   DROVER_CLUSTER        a cluster imported (Active) before the test
//   DROVER_PROJECT        its project "team" (namespace team-ns), where
//                         users pm (project member) and ro (read-only)
//                         are bound, each with the password
//                         "<name> has a long password"
//   DROVER_CHROMIUM       the browser
//   DROVER_SCREENSHOTS    where to save screenshots
//   DROVER_WORK           a scratch directory
// When the test needs a cluster's agent started, it prints
//   @@import <cluster-id> <the command the page shows>
// and waits for the harness to answer "ok" on stdin; for kubectl against
// DROVER_CLUSTER through Drover, as the admin, it prints
//   @@kubectl <arguments>            (or a JSON array of them)
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { strict as assert } from "node:assert";
import path from "node:path";

const url = process.env.DROVER_URL;
const password = process.env.DROVER_PASSWORD;
const existing = process.env.DROVER_CLUSTER;
const shots = process.env.DROVER_SCREENSHOTS;
const work = process.env.DROVER_WORK;
const XSS = "<img src=x onerror=alert(1)>";

const stdin = createInterface({ input: process.stdin });
const answers = stdin[Symbol.asyncIterator]();
async function askHarness(line) {
  console.log(line);
  const { value } = await answers.next();
  assert.equal(value, "ok", `harness answered ${value}`);
}

let step = "start";
function say(s) {
  step = s;
  console.log(`- ${s}`);
}

const browser = await chromium.launch({
  executablePath: process.env.DROVER_CHROMIUM,
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
try {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, // Drover's own CA; the test checks TLS elsewhere
    viewport: { width: 1280, height: 800 },
    acceptDownloads: true,
  });
  const page = await context.newPage();
  const dialogs = [];
  page.on("dialog", async (d) => {
    dialogs.push(d.message());
    await d.dismiss();
  });
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  const shot = (name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

  say("signing in");
  await page.goto(`${url}/dashboard/`);
  assert.match(page.url(), /\/dashboard\/login$/);
  await shot("01-login");
  assert.equal(await page.evaluate(() => document.activeElement.id), "username", "the username field has focus");
  await page.getByLabel("Username").fill("admin");
  await page.getByLabel("Password").fill("wrong password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Invalid username or password.").waitFor();
  await page.getByLabel("Password").fill(password);
  await page.getByLabel("Password").press("Enter");
  await page.waitForURL(/\/dashboard\/clusters$/);
  const session = (await context.cookies()).find((c) => c.name === "__Host-drover-session");
  assert.ok(session, "a session cookie");
  assert.equal(session.httpOnly, true);
  assert.equal(session.secure, true);
  assert.equal(session.sameSite, "Strict");

  // Keyboard: the first Tab reaches the skip link, shown when focused.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");
  assert.ok(await page.getByRole("link", { name: "Skip to content" }).isVisible());

  say("the clusters table");
  const existingRow = page.locator(`tr[data-id="${existing}"]`);
  await existingRow.locator(".badge", { hasText: "Active" }).waitFor();
  assert.equal(await existingRow.locator('[data-col="version"]').textContent(), "v1.31.4");
  assert.equal(await existingRow.locator('[data-col="nodes"]').textContent(), "3");
  const headers = await page.locator("#clusters th").allTextContents();
  assert.deepEqual(headers, ["Name", "State", "Kubernetes version", "Nodes", "CPU", "Memory"]);
  await page.getByLabel("Filter by name").fill("no such cluster");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.getByText("No clusters").waitFor();
  await page.goto(`${url}/dashboard/clusters`);
  await shot("02-clusters");
  const resp = await page.request.get(`${url}/dashboard/clusters`);
  const csp = resp.headers()["content-security-policy"];
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline/);

  say("importing a cluster whose name is markup");
  await page.getByRole("link", { name: "Import cluster" }).click();
  await page.getByLabel("Cluster name").fill(XSS);
  await page.getByRole("button", { name: /Create and show/ }).click();
  await page.waitForURL(/\/dashboard\/clusters\/[^/]+\/import$/);
  const id = decodeURIComponent(page.url().split("/").at(-2));
  assert.equal(await page.locator("h1").textContent(), `Import ${XSS}`);
  assert.equal(await page.locator("main img").count(), 0, "the name is text, not an image");
  const command = (await page.locator("#import-command").textContent()).trim();
  assert.match(command, /^kubectl apply -f https:\/\/127\.0\.0\.1:\d+\/v1-public\/import\/[a-z0-9]+\.yaml$/);
  const insecure = (await page.locator("#import-insecure").textContent()).trim();
  assert.match(insecure, /^curl --insecure -sfL https:\/\/.+ \| kubectl apply -f -$/);
  await page.getByRole("button", { name: "Copy command" }).first().click();
  await shot("03-import");

  say("the new cluster turns Active without a reload");
  await page.getByRole("link", { name: "Back to the clusters" }).click();
  const row = page.locator(`tr[data-id="${id}"]`);
  await row.locator(".badge", { hasText: "Pending" }).waitFor();
  assert.equal(await row.locator("a").textContent(), XSS);
  await page.evaluate(() => { window.__sameDocument = true; });
  await askHarness(`@@import ${id} ${insecure}`);
  const started = Date.now();
  await row.locator(".badge", { hasText: "Active" }).waitFor({ timeout: 30000 });
  console.log(`  Active on the page ${Date.now() - started} ms after the agent started`);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "no reload happened");
  assert.equal(await row.locator('[data-col="nodes"]').textContent(), "3");

  say("a cluster's page: nodes");
  await row.locator("a").click();
  await page.waitForURL(new RegExp(`/dashboard/clusters/${id}$`));
  await page.locator("#nodes tbody tr").nth(2).waitFor();
  assert.equal(await page.locator("#nodes tbody tr").count(), 3);
  const firstNode = await page.locator("#nodes tbody tr").first().textContent();
  assert.match(firstNode, /Ready=True/);
  assert.match(firstNode, /v1\.31\.4/);
  await shot("04-cluster");

  say("adding a user");
  await page.getByRole("link", { name: "Users" }).click();
  await page.getByLabel("Username").fill("bob");
  await page.getByLabel("Display name").fill("Bob Builder");
  await page.getByLabel(/^Password/).fill("bob has a long password");
  await page.getByLabel("Must change the password at first sign-in").uncheck();
  await page.getByRole("button", { name: "Add user" }).click();
  await page.getByText("The user was created.").waitFor();
  assert.match(await page.locator("#users").textContent(), /Bob Builder/);
  await shot("05-users");

  say("adding a member to the cluster");
  await page.goto(`${url}/dashboard/clusters/${id}`);
  await page.getByLabel("User", { exact: true }).selectOption("bob");
  await page.getByLabel("Role", { exact: true }).selectOption("cluster-member");
  await page.getByRole("button", { name: "Add member" }).click();
  await page.getByText("The member was added.").waitFor();
  const members = await page.locator("table.members").textContent();
  assert.match(members, /bob\s*Cluster Member/);

  say("downloading a kubeconfig that works with kubectl");
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download kubeconfig" }).click(),
  ]);
  const kubeconfig = path.join(work, "ui.kubeconfig");
  await download.saveAs(kubeconfig);
  const nodes = execFileSync("kubectl", ["--kubeconfig", kubeconfig, "get", "nodes", "-o", "name"], { encoding: "utf8" });
  assert.equal(nodes.trim().split("\n").length, 3, nodes);

  say("a project: namespaces and quota");
  await page.getByRole("link", { name: "Default" }).click();
  await page.getByRole("heading", { name: "Quota" }).waitFor();
  await page.getByLabel("New namespace").fill("ui-made");
  await page.getByRole("button", { name: "Create namespace" }).click();
  await page.getByText("The namespace was created.").waitFor();
  assert.match(await page.locator("#namespaces").textContent(), /ui-made/);
  await shot("06-project");
  await page.getByLabel("Project for ui-made").selectOption({ label: "System" });
  await page.locator('form[action$="/namespaces/ui-made/move"] button').click();
  await page.getByText("The namespace was moved.").waitFor();
  assert.doesNotMatch(await page.locator("#namespaces").textContent(), /ui-made/);
  await page.locator("nav.crumbs").getByRole("link", { name: XSS }).click();
  assert.match(await page.locator("#projects").textContent(), /System.*ui-made/s);

  say("quota usage as bars");
  await page.goto(`${url}/dashboard/clusters/${existing}`);
  await page.getByRole("link", { name: "team" }).click();
  const meter = page.getByRole("meter", { name: "pods used", exact: true });
  for (let i = 0; i < 40 && (await meter.getAttribute("value")) !== "2"; i++) {
    await page.waitForTimeout(250);
    await page.reload();
  }
  assert.equal(await meter.getAttribute("value"), "2");
  assert.equal(await meter.getAttribute("max"), "10");
  assert.match(await page.locator("dl.quota").textContent(), /2 of 10/);
  assert.match(await page.locator("#namespaces").textContent(), /team-ns/);
  await shot("06-project-quota");

  say("editing the quota moves the bars");
  await page.getByText("Edit quota").click();
  await page.getByLabel("pods project limit").fill("20");
  await page.getByLabel("pods namespace default").fill("8");
  await page.getByRole("button", { name: "Save quota" }).click();
  await page.getByText("The quota was saved.").waitFor();
  assert.equal(await page.getByRole("meter", { name: "pods used", exact: true }).getAttribute("max"), "20");
  assert.match(await page.locator("dl.quota").textContent(), /2 of 20/);
  const share = page.getByRole("meter", { name: "pods used in team-ns" });
  for (let i = 0; i < 40 && (await share.getAttribute("max")) !== "8"; i++) {
    await page.waitForTimeout(250);
    await page.reload();
  }
  assert.equal(await share.getAttribute("max"), "8", "the namespace's share follows the default");
  assert.equal(await share.getAttribute("value"), "2");
  // A default beyond the project limit is refused, and changes nothing.
  await page.getByText("Edit quota").click();
  await page.getByLabel("pods namespace default").fill("50");
  await page.getByRole("button", { name: "Save quota" }).click();
  await page.getByText(/must not exceed the project's limit/).waitFor();
  // Refused in place: the page, its navigation and the input stay.
  assert.equal(await page.getByLabel("pods namespace default").inputValue(), "50", "the input is kept");
  assert.equal(await page.getByRole("link", { name: "API keys" }).count(), 1, "inside the normal page");
  await shot("06-project-quota-refused");
  await page.goto(`${url}/dashboard/clusters/${existing}`);
  await page.getByRole("link", { name: "team" }).click();
  assert.match(await page.locator("dl.quota").textContent(), /2 of 20/);
  assert.equal(await page.getByRole("meter", { name: "pods used in team-ns" }).getAttribute("max"), "8");
  await shot("06-project-quota-edited");

  // ---- The cluster explorer ------------------------------------------
  const ex = `${url}/dashboard/clusters/${existing}/explore`;
  const kubectl = async (args) => askHarness(`@@kubectl ${args}`);
  const waitFor = async (what, check, ms = 30000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      if (await check()) return;
      assert.ok(Date.now() < deadline, `${what} within ${ms / 1000} s`);
      await page.waitForTimeout(250);
    }
  };

  say("the explorer: a deployment made with kubectl shows up live");
  await page.goto(`${ex}/deployments?ns=team-ns`);
  await page.getByRole("heading", { name: "Deployments" }).waitFor();
  await page.evaluate(() => { window.__sameDocument = true; });
  await kubectl("create deployment web --image=nginx:1.25 -n team-ns");
  await page.locator('#explorer tr[data-name="web"]').waitFor({ timeout: 20000 });
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "the row came without a reload");
  await waitFor("web 1/1 ready on the list", async () =>
    /1\/1/.test(await page.locator('#explorer tr[data-name="web"]').textContent()));
  await shot("10-explorer-deployments");

  say("scaling to 3 shows 3 ready");
  await page.locator('#explorer tr[data-name="web"] a').click();
  await page.getByRole("heading", { name: /web/ }).waitFor();
  await page.getByLabel("Replicas").fill("3");
  await page.getByRole("button", { name: "Scale" }).click();
  await page.getByText("The new scale was saved.").waitFor();
  await waitFor("3 of 3 ready", async () => {
    await page.reload();
    return (await page.locator("#ready").textContent()).trim() === "3 of 3";
  });
  assert.equal(await page.locator("#pods tbody tr").count(), 3);
  await shot("11-deployment-scaled");

  say("changing the image, then rolling back to revision 1 after the diff");
  await page.getByLabel("Image").fill("nginx:1.26");
  await page.getByRole("button", { name: "Change image" }).click();
  await page.getByText("The image was changed").waitFor();
  await waitFor("revision 2", async () => {
    await page.reload();
    return (await page.locator("#revision").textContent()).trim() === "2";
  });
  assert.equal((await page.locator("#images").textContent()).trim(), "nginx:1.26");
  await page.getByRole("link", { name: "Review rollback to revision 1" }).click();
  const diff = await page.locator("#diff").textContent();
  assert.match(diff, /^- +- image: nginx:1\.26$/m, diff);
  assert.match(diff, /^\+ +- image: nginx:1\.25$/m, diff);
  await shot("12-rollback-diff");
  await page.getByRole("button", { name: "Roll back to revision 1" }).click();
  await page.getByText("The rollback was started.").waitFor();
  await waitFor("revision 3 with the first image", async () => {
    await page.reload();
    return (await page.locator("#revision").textContent()).trim() === "3"
      && (await page.locator("#images").textContent()).trim() === "nginx:1.25";
  });
  const deploymentUrl = page.url().split("?")[0];

  say("restart and an environment variable each make a rollout");
  await page.getByRole("button", { name: "Restart" }).click();
  await page.getByText("A restart was started.").waitFor();
  await page.getByLabel("Variable").fill("GREETING");
  await page.getByLabel("Value").fill("hello there");
  await page.getByRole("button", { name: "Set variable" }).click();
  await page.getByText("The environment was changed").waitFor();
  assert.match(await page.locator("#env").textContent(), /GREETING\s*hello there/);
  await waitFor("revision 5", async () => {
    await page.reload();
    return (await page.locator("#revision").textContent()).trim() === "5";
  });

  say("a StatefulSet rolls back too, from its ControllerRevisions");
  const stsFile = path.join(work, "db.yaml");
  writeFileSync(stsFile, `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: team-ns}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: "postgres:15"}]}
`);
  await kubectl(JSON.stringify(["apply", "-f", stsFile]));
  await kubectl(JSON.stringify(["set", "image", "statefulset/db", "db=postgres:16", "-n", "team-ns"]));
  await page.goto(`${ex}/statefulsets/team-ns/db`);
  await waitFor("two revisions of db", async () => {
    await page.reload();
    return (await page.locator("#revisions tbody tr").count()) === 2;
  });
  await page.getByRole("link", { name: "Review rollback to revision 1" }).click();
  assert.match(await page.locator("#diff").textContent(), /^- +- image: postgres:16$/m);
  await page.getByRole("button", { name: "Roll back to revision 1" }).click();
  await page.getByText("The rollback was started.").waitFor();
  await waitFor("db back on postgres:15", async () => {
    await page.reload();
    return (await page.locator("#images").textContent()).trim() === "postgres:15";
  });
  assert.match(await page.locator('#revisions tr[data-revision="3"]').textContent(), /current/);

  say("a pod's log tail shows new lines as they come");
  await page.goto(deploymentUrl);
  await page.locator("#pods tbody tr a").first().click();
  await page.locator("#log-lines div").first().waitFor({ timeout: 20000 });
  const before = await page.locator("#log-lines div").count();
  await waitFor("a new log line", async () => (await page.locator("#log-lines div").count()) > before, 30000);
  const lastLine = await page.locator("#log-lines div").last().textContent();
  await page.getByLabel("Search the tail").fill(lastLine.slice(0, 40));
  assert.ok(await page.locator("#log-lines div:not([hidden])").count() >= 1, "the search shows matching lines");
  await page.getByLabel("Search the tail").fill("");
  await page.getByLabel("Previous instance").check();
  await page.locator("#log-error").getByText(/previous terminated container/).waitFor();
  await page.getByLabel("Previous instance").uncheck();
  await shot("13-pod-logs");
  const podUrl = page.url().split("?")[0];

  say("a shell runs echo hello");
  await page.getByRole("button", { name: "Open a shell" }).click();
  const rows = page.locator("#terminal .xterm-rows");
  await waitFor("the shell's prompt", async () => /# $/m.test((await rows.innerText().catch(() => "")).trimEnd() + " "));
  await page.keyboard.type("echo hello");
  await page.keyboard.press("Enter");
  await waitFor("hello on a line of its own", async () =>
    (await rows.innerText()).split("\n").some((l) => l.trim() === "hello"));
  await shot("14-pod-shell");

  say("a crash-looping pod: its restarts, and the previous instance's log");
  await kubectl(JSON.stringify(["run", "crasher", "-n", "team-ns", "--image=busybox", "--", "sh", "-c", "echo from the first run; sleep 1; exit 3"]));
  await page.goto(`${ex}/pods/team-ns/crasher`);
  await waitFor("a restart, then a back-off", async () => {
    await page.reload();
    return (await page.locator("#containers tbody tr td").nth(4).textContent()).trim() !== "0"
      && /CrashLoopBackOff/.test(await page.locator("#pod-status").textContent());
  });
  await page.getByLabel("Previous instance").check();
  await page.locator("#log-lines div", { hasText: "from the first run" }).waitFor();
  await shot("14-pod-previous-log");
  await page.goto(`${ex}/pods?ns=team-ns`);
  assert.match(await page.locator('#explorer tr[data-name="crasher"]').getAttribute("class"), /warn/, "the failing pod is highlighted");

  say("a YAML edit with an invalid field is refused in place, and nothing changes");
  await page.goto(`${deploymentUrl}/yaml`);
  const original = await page.getByLabel(/^YAML of deployment web/).inputValue();
  const rv = original.match(/resourceVersion: '?"?(\d+)/)[1];
  const edited = original.replace(/\nspec:\n/, "\nspec:\n  bogusField: true\n");
  assert.notEqual(edited, original);
  await page.getByLabel(/^YAML of deployment web/).fill(edited);
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#yaml-error").getByText(/unknown field "spec\.bogusField"/).waitFor();
  assert.equal(await page.getByLabel(/^YAML of deployment web/).inputValue(), edited, "the edit is kept");
  assert.equal(await page.locator("header nav").count(), 1, "inside the normal page");
  await shot("15-yaml-refused");
  await page.goto(`${deploymentUrl}/yaml`);
  const afterEdit = await page.getByLabel(/^YAML of deployment web/).inputValue();
  assert.equal(afterEdit.match(/resourceVersion: '?"?(\d+)/)[1], rv, "the deployment did not change");
  assert.doesNotMatch(afterEdit, /bogusField/);

  say("Import YAML: every document is checked first, then created");
  await page.goto(`${ex}/configmaps?ns=team-ns`);
  await page.getByRole("link", { name: "Import YAML" }).click();
  await page.getByLabel("Namespace (for documents that name none)").selectOption("team-ns");
  const bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: imported-one\ndata:\n  a: \"1\"\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: imported-two\nnotAField: true\n";
  await page.getByLabel("YAML", { exact: true }).fill(bad);
  await page.getByRole("button", { name: "Import" }).click();
  await page.locator("#yaml-error").getByText(/document 2 .*unknown field "notAField".*nothing was created/).waitFor();
  assert.equal(await page.getByLabel("YAML", { exact: true }).inputValue(), bad, "the YAML is kept");
  await page.getByLabel("YAML", { exact: true }).fill(bad.replace("notAField: true\n", ""));
  await page.getByRole("button", { name: "Import" }).click();
  await page.locator('#explorer tr[data-name="imported-two"]').waitFor();
  assert.equal(await page.locator('#explorer tr[data-name="imported-one"]').count(), 1);

  say("adding an existing member is refused, with the choice kept");
  await page.goto(`${url}/dashboard/clusters/${existing}/projects/${process.env.DROVER_PROJECT}`);
  const picker = page.getByLabel("User", { exact: true });
  assert.equal(await picker.locator('option[value="pm"]').count(), 0, "members are left out of the picker");
  // A picker from before pm was added (another tab) still offers pm.
  await picker.evaluate((sel) => { const o = document.createElement("option"); o.value = "pm"; o.textContent = "pm"; sel.appendChild(o); });
  await picker.selectOption("pm");
  await page.getByLabel("Role", { exact: true }).selectOption("project-member");
  await page.getByRole("button", { name: "Add member" }).click();
  await page.locator("#member-error").getByText("pm is already a member with the role Project Member.").waitFor();
  assert.equal(await page.getByLabel("User", { exact: true }).inputValue(), "pm", "the choice is kept");
  assert.equal(await page.getByLabel("Role", { exact: true }).inputValue(), "project-member");
  const memberNames = await page.locator("table.members tbody tr td:first-child").allTextContents();
  assert.equal(memberNames.filter((n) => n.trim() === "pm").length, 1, "still one binding");

  say("a project member sees their project's namespaces only, and no admin actions");
  const pmContext = await browser.newContext({ ignoreHTTPSErrors: true });
  const pm = await pmContext.newPage();
  const signIn = async (p, user) => {
    await p.goto(`${url}/dashboard/login`);
    await p.getByLabel("Username").fill(user);
    await p.getByLabel("Password").fill(`${user} has a long password`);
    await p.getByRole("button", { name: "Sign in" }).click();
    await p.waitForURL(/\/dashboard\/clusters/);
  };
  await signIn(pm, "pm");
  assert.equal(await pm.getByRole("link", { name: "Users" }).count(), 0, "no Users page");
  await pm.goto(`${url}/dashboard/clusters/${existing}`);
  assert.equal(await pm.getByRole("link", { name: "Delete cluster" }).count(), 0);
  assert.equal(await pm.getByRole("link", { name: "Import command" }).count(), 0);
  assert.equal(await pm.getByRole("button", { name: /^Remove / }).count(), 0, "no member removal");
  await pm.goto(`${ex}/deployments`);
  const options = await pm.locator("#ns option").allTextContents();
  assert.deepEqual(options, ["All namespaces", "team-ns"], "only the project's namespace");
  assert.match(await pm.locator("#explorer").textContent(), /web/);
  await pm.screenshot({ path: path.join(shots, "16-member-explorer.png"), fullPage: true });
  const pmCsrf = await pm.locator('input[name="_csrf"]').first().inputValue();
  const forcedDelete = await pm.request.post(`${url}/dashboard/clusters/${existing}/delete`, { form: { _csrf: pmCsrf, confirm: existing } });
  assert.equal(forcedDelete.status(), 403, "deleting the cluster is refused when forced");
  const forcedUser = await pm.request.post(`${url}/dashboard/users`, { form: { _csrf: pmCsrf, username: "mallory", password: "mallory has a password" } });
  assert.equal(forcedUser.status(), 403, "adding a user is refused when forced");
  await pm.goto(`${url}/dashboard/users`);
  assert.match(await pm.locator("main").textContent(), /Not allowed|forbidden/i);
  await pmContext.close();

  say("a read-only member sees no action at all, and a forced one is refused");
  const roContext = await browser.newContext({ ignoreHTTPSErrors: true });
  const ro = await roContext.newPage();
  await signIn(ro, "ro");
  await ro.goto(deploymentUrl);
  for (const name of ["Scale", "Restart", "Change image", "Set variable", "Delete", "Edit YAML"]) {
    assert.equal(await ro.getByRole("button", { name, exact: true }).count() + await ro.getByRole("link", { name, exact: true }).count(), 0, `no ${name}`);
  }
  assert.equal(await ro.getByRole("link", { name: /Review rollback/ }).count(), 0, "no rollback");
  await ro.locator(".readonly").first().waitFor();
  await ro.goto(`${ex}/deployments?ns=team-ns`);
  assert.equal(await ro.getByRole("link", { name: "Import YAML" }).count(), 0);
  await ro.goto(podUrl);
  assert.equal(await ro.getByRole("button", { name: "Open a shell" }).count(), 0, "no shell");
  await ro.screenshot({ path: path.join(shots, "17-read-only.png"), fullPage: true });
  const roCsrf = await ro.locator('input[name="_csrf"]').first().inputValue();
  const forcedScale = await ro.request.post(`${deploymentUrl}/scale`, { form: { _csrf: roCsrf, replicas: "0" } });
  assert.equal(forcedScale.status(), 403, "scaling is refused when forced");
  assert.match(await forcedScale.text(), /forbidden/);
  const forcedRemove = await ro.request.post(`${deploymentUrl}/delete`, { form: { _csrf: roCsrf, confirm: "web" } });
  assert.equal(forcedRemove.status(), 403, "deleting is refused when forced");
  const forcedShell = await ro.evaluate(async (u) => new Promise((resolve) => {
    const ws = new WebSocket(u.replace(/^http/, "ws") + "/shell", ["v4.channel.k8s.io"]);
    ws.onopen = () => resolve("open");
    ws.onerror = () => resolve("refused");
  }), podUrl);
  assert.equal(forcedShell, "refused", "a forced shell is refused");
  await ro.goto(deploymentUrl);
  assert.equal((await ro.locator("#ready").textContent()).trim(), "3 of 3", "nothing changed");
  await roContext.close();

  say("/ focuses the search, which finds projects and namespaces");
  await page.goto(`${url}/dashboard/clusters`);
  await page.locator("h1").click();
  await page.keyboard.press("/");
  assert.equal(await page.evaluate(() => document.activeElement.id), "site-search");
  await page.keyboard.type("team");
  await page.keyboard.press("Enter");
  await page.waitForURL(/\/dashboard\/search\?q=team/);
  assert.match(await page.locator("#found-projects").textContent(), /team/);
  assert.match(await page.locator("#found-namespaces").textContent(), /team-ns/);

  say("health at a glance");
  assert.match(await page.goto(`${url}/dashboard/clusters`).then(() => page.locator("#health").textContent()), /nodes not Ready/);
  await page.goto(`${url}/dashboard/clusters/${existing}`);
  assert.match(await page.locator("#cpu-requested").textContent(), /of .* allocatable/);

  const explorerPages = [`${ex}/deployments?ns=team-ns`, deploymentUrl, podUrl, `${deploymentUrl}/yaml`,
    `${deploymentUrl}/rollback?revision=2`, `${ex}/pods?ns=team-ns`, `${ex}/events?ns=team-ns`, `${ex}/import?ns=team-ns`,
    `${deploymentUrl}/delete`, `${ex}/statefulsets/team-ns/db`, `${ex}/secrets?ns=team-ns`, `${url}/dashboard/search?q=team`];

  say("the explorer's pages: labels, keyboard and an accessibility check");
  const axeContext = await browser.newContext({ ignoreHTTPSErrors: true, bypassCSP: true });
  await axeContext.addCookies((await context.cookies()).filter((c) => c.name === "__Host-drover-session"));
  const axePage = await axeContext.newPage();
  for (const p of explorerPages) {
    await axePage.goto(p);
    const unlabeled = await axePage.evaluate(() =>
      [...document.querySelectorAll("input:not([type=hidden]), select, textarea")]
        .filter((el) => el.labels.length === 0 && !el.getAttribute("aria-label"))
        .map((el) => el.id || el.name));
    assert.deepEqual(unlabeled, [], `unlabeled fields on ${p}`);
    const unreachable = await axePage.evaluate(() =>
      [...document.querySelectorAll("main button, main a[href]")].filter((el) => el.tabIndex < 0 || el.disabled).map((el) => el.textContent));
    assert.deepEqual(unreachable, [], `actions not reachable by keyboard on ${p}`);
    await axePage.addScriptTag({ path: path.resolve("node_modules/axe-core/axe.min.js") });
    const result = await axePage.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
    const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
    assert.deepEqual(serious.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target).join(" ")})`), [], `axe on ${p}`);
  }
  // The actions by keyboard: Tab reaches "Scale" on the deployment's page.
  await axePage.goto(deploymentUrl);
  let reached = false;
  for (let i = 0; i < 60 && !reached; i++) {
    await axePage.keyboard.press("Tab");
    reached = await axePage.evaluate(() => document.activeElement.textContent === "Scale");
  }
  assert.ok(reached, "Tab reaches the Scale button");
  await axeContext.close();

  say("390 px wide and dark");
  const darkContext = await browser.newContext({ ignoreHTTPSErrors: true, colorScheme: "dark", viewport: { width: 390, height: 844 } });
  await darkContext.addCookies((await context.cookies()).filter((c) => c.name === "__Host-drover-session"));
  const dark = await darkContext.newPage();
  const allPages = [`${url}/dashboard/clusters`, `${url}/dashboard/clusters/${existing}`,
    `${url}/dashboard/clusters/${existing}/projects/${process.env.DROVER_PROJECT}`, `${url}/dashboard/users`,
    `${url}/dashboard/tokens`, `${url}/dashboard/settings`, `${url}/dashboard/clusters/new`,
    `${url}/dashboard/clusters/${existing}/delete`, `${url}/dashboard/password`, ...explorerPages];
  for (const p of allPages) {
    await dark.goto(p);
    const overflow = await dark.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    const wide = await dark.evaluate(() => [...document.querySelectorAll("body *")]
      .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1 && !el.closest(".scroll"))
      .slice(0, 3).map((el) => el.tagName + (el.id ? "#" + el.id : "") + "." + el.className));
    assert.ok(overflow <= 1, `${p} is ${overflow}px wider than a 390 px screen: ${wide}`);
    const bg = await dark.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const [r, g, b] = bg.match(/\d+/g).map(Number);
    assert.ok(r + g + b < 120, `${p} is dark (${bg})`);
  }
  await dark.goto(deploymentUrl);
  await dark.screenshot({ path: path.join(shots, "18-narrow-deployment.png"), fullPage: true });
  await dark.goto(`${url}/dashboard/clusters`);
  await dark.screenshot({ path: path.join(shots, "19-dark-clusters.png"), fullPage: true });
  await darkContext.close();

  say("API keys: the secret is shown once");
  await page.getByRole("link", { name: "API keys" }).click();
  await page.getByLabel("Description").fill("key from the browser test");
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = (await page.locator("#new-key").textContent()).trim();
  assert.match(secret, /^token-[a-z0-9]+:[a-z0-9]+$/);
  await shot("07-api-key-created");
  const keyName = secret.split(":")[0];
  const whoami = await page.request.post(`${url}/apis/authentication.k8s.io/v1/selfsubjectreviews`, {
    headers: { Authorization: `Bearer ${secret}`, "Content-Type": "application/json" },
    data: { apiVersion: "authentication.k8s.io/v1", kind: "SelfSubjectReview" },
  });
  assert.equal(whoami.status(), 201, "the new key works");
  await page.goto(`${url}/dashboard/tokens`);
  const listed = await page.content();
  assert.ok(listed.includes(keyName), "the key is listed");
  assert.ok(!listed.includes(secret.split(":")[1]), "the secret is not shown again");
  await page.getByRole("link", { name: `Delete key ${keyName}` }).click();
  await page.getByLabel(/to confirm/).fill("not the key");
  await page.getByRole("button", { name: "Delete key" }).click();
  await page.getByText(/type the key's name/).waitFor();
  await page.getByLabel(/to confirm/).fill(keyName);
  await page.getByRole("button", { name: "Delete key" }).click();
  await page.getByText("The API key was deleted.").waitFor();
  assert.ok(!(await page.content()).includes(keyName));
  const revoked = await page.request.post(`${url}/apis/authentication.k8s.io/v1/selfsubjectreviews`, {
    headers: { Authorization: `Bearer ${secret}`, "Content-Type": "application/json" },
    data: { apiVersion: "authentication.k8s.io/v1", kind: "SelfSubjectReview" },
  });
  assert.equal(revoked.status(), 401, "the deleted key no longer works");

  say("a form posted without the CSRF token is refused");
  const forged = await page.request.post(`${url}/dashboard/tokens`, { form: { description: "forged" } });
  assert.equal(forged.status(), 403);
  const wrong = await page.request.post(`${url}/dashboard/tokens`, { form: { description: "forged", _csrf: "0".repeat(40) } });
  assert.equal(wrong.status(), 403);
  await page.goto(`${url}/dashboard/tokens`);
  assert.ok(!(await page.content()).includes("forged"), "no key was made");

  say("settings");
  await page.getByRole("link", { name: "Settings" }).click();
  assert.match(await page.locator("#ca-checksum").textContent(), /^[0-9a-f]{64}$/);

  say("back up now, and a backup that fails says why");
  await page.getByRole("button", { name: "Back up now" }).click();
  await page.waitForURL(/\/dashboard\/settings\?notice=backup-started$/);
  await page.getByText("The backup was started").waitFor();
  const stateOf = async (row) => (await row.locator("[data-state]").getAttribute("data-state"));
  const waitState = async (row, want) => {
    const deadline = Date.now() + 30000;
    for (;;) {
      if ((await row.count()) > 0 && (await stateOf(row)) === want) return;
      assert.ok(Date.now() < deadline, `no ${want} backup within 30 s`);
      await page.waitForTimeout(250);
      await page.reload();
    }
  };
  const first = page.locator("#backups tbody tr").first();
  await waitState(first, "Ready");
  assert.equal((await first.locator("td").nth(5).textContent()).trim(), "1", "one file");
  await page.getByLabel("Location (empty: the server's data directory)").fill("file:///proc/drover-cannot-write-here");
  await page.getByRole("button", { name: "Back up now" }).click();
  await page.waitForURL(/notice=backup-started$/);
  const failed = page.locator("#backups tbody tr").nth(1);
  await waitState(failed, "Failed");
  assert.match(await failed.locator("td.failure").textContent(), /drover-cannot-write-here/);
  await shot("08-settings");

  say("every visible field has a label");
  for (const p of ["/dashboard/clusters", `/dashboard/clusters/${id}`, "/dashboard/users", "/dashboard/tokens", "/dashboard/settings"]) {
    await page.goto(`${url}${p}`);
    const unlabeled = await page.evaluate(() =>
      [...document.querySelectorAll("input:not([type=hidden]), select")]
        .filter((el) => el.labels.length === 0 && !el.getAttribute("aria-label"))
        .map((el) => el.name));
    assert.deepEqual(unlabeled, [], `unlabeled fields on ${p}`);
  }

  say("a narrow screen");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${url}/dashboard/clusters`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page is ${overflow}px wider than the screen`);
  await shot("09-clusters-narrow");
  await page.setViewportSize({ width: 1280, height: 800 });

  say("deleting a cluster, after confirming");
  await page.goto(`${url}/dashboard/clusters/${id}`);
  await page.getByRole("link", { name: "Delete cluster" }).click();
  await page.getByLabel(/to confirm/).fill("not the id");
  await page.getByRole("button", { name: "Delete cluster" }).click();
  await page.getByText(/type the cluster's id/).waitFor();
  assert.equal(await page.getByLabel(/to confirm/).inputValue(), "not the id", "the input is kept");
  await page.getByLabel(/to confirm/).fill(id);
  await page.getByRole("button", { name: "Delete cluster" }).click();
  await page.getByText("The cluster is being removed.").waitFor();
  await page.locator(`tr[data-id="${id}"]`).waitFor({ state: "detached", timeout: 90000 });

  say("a user who must change their password");
  await page.goto(`${url}/dashboard/users`);
  await page.getByLabel("Username").fill("carol");
  await page.getByLabel(/^Password/).fill("carol has a first password");
  await page.getByRole("button", { name: "Add user" }).click();
  await page.getByText("The user was created.").waitFor();
  const carol = await browser.newContext({ ignoreHTTPSErrors: true });
  const cp = await carol.newPage();
  await cp.goto(`${url}/dashboard/login`);
  await cp.getByLabel("Username").fill("carol");
  await cp.getByLabel("Password").fill("carol has a first password");
  await cp.getByRole("button", { name: "Sign in" }).click();
  await cp.waitForURL(/\/dashboard\/password\?forced=1$/);
  await cp.getByLabel("Current password").fill("carol has a first password");
  await cp.getByLabel("New password", { exact: true }).fill("carol has a better password");
  await cp.getByLabel("New password, again").fill("carol has a better password");
  await cp.getByRole("button", { name: "Change password" }).click();
  await cp.waitForURL(/\/dashboard\/clusters\?notice=password$/);
  await cp.getByText("Your password was changed.").waitFor();
  await cp.goto(`${url}/dashboard/settings`);
  assert.equal(await cp.locator("#backups, #backup-now").count(), 0, "backups are for admins only");
  await carol.close();

  say("signing out");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(/\/dashboard\/login$/);
  await page.goto(`${url}/dashboard/clusters`);
  assert.match(page.url(), /\/dashboard\/login$/, "the session is gone");
  const after = await page.request.post(`${url}/apis/authentication.k8s.io/v1/selfsubjectreviews`, {
    headers: { Authorization: `Bearer ${session.value}`, "Content-Type": "application/json" },
    data: { apiVersion: "authentication.k8s.io/v1", kind: "SelfSubjectReview" },
  });
  assert.equal(after.status(), 401, "sign-out revoked the session's token");

  assert.deepEqual(dialogs, [], "no dialog opened");
  // Refused requests the test makes on purpose (a wrong password, a wrong
  // confirmation) are logged by the browser too; anything else is a
  // script error.
  assert.deepEqual(consoleErrors.filter((e) => !e.startsWith("Failed to load resource: the server responded with a status of 4")), [], "no script errors");
  console.log("@@done");
} catch (e) {
  console.error(`failed at step: ${step}`);
  for (const ctx of browser.contexts()) {
    for (const [i, p] of ctx.pages().entries()) {
      await p.screenshot({ path: path.join(shots, `failed-${i}.png`), fullPage: true }).catch(() => {});
    }
  }
  throw e;
} finally {
  await browser.close();
  stdin.close();
}
