// Sign-ins in headless chromium, for crates/drover/tests/{ldap,oidc}.rs.
//
//   node sso.mjs authorize <authorize-url> <user> <password>
//       log in on the OIDC provider's form; print the URL the browser is
//       redirected to at the end (a CLI's loopback callback, with code and
//       state), whether or not anything listens there
//   node sso.mjs ui-oidc <drover-url> <user> <password>
//       Drover's sign-in page → "Sign in with single sign-on" → the
//       provider's form → back in Drover; print the page's heading
//   node sso.mjs ui-ldap <drover-url> <user> <password>
//       Drover's sign-in page with the LDAP account type; print the heading
//   node sso.mjs ui-directory <drover-url> admin <password> <settings.json>
//       as the admin: save the directory form on the settings page from the
//       JSON ({servers, port, tls, ca, serviceAccount, serviceAccountPassword,
//       userSearchBase, userSearchFilter, groupSearchBase, cluster, search,
//       principal}), then on the cluster's page find `search` in the member
//       picker, pick `principal` and add it as cluster-member
//
// Env: DROVER_CHROMIUM = the chromium binary. Exit 0 on success.
import { chromium } from 'playwright-core';

const [mode, target, username, password] = process.argv.slice(2);
const TIMEOUT = 20_000;
const browser = await chromium.launch({
  executablePath: process.env.DROVER_CHROMIUM || undefined,
  args: ['--no-sandbox'],
});
let code = 1;
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const fillProvider = async () => {
    await page.locator('input[name="password"]').waitFor();
    await page.fill('input[name="username"]', username);
    await page.fill('input[name="password"]', password);
    await page.click('button[type="submit"]');
  };
  if (mode === 'authorize') {
    const origin = new URL(target).origin;
    let landed;
    const reached = new Promise((resolve) => {
      const seen = (url) => {
        if (landed === undefined && URL.parse(url)?.origin !== origin && !url.startsWith('about:')) {
          landed = url;
          resolve(url);
        }
      };
      page.on('request', (r) => { if (r.isNavigationRequest() && r.frame() === page.mainFrame()) seen(r.url()); });
    });
    await page.goto(target);
    await fillProvider().catch(() => {});
    const url = await Promise.race([reached, new Promise((_, no) => setTimeout(() => no(new Error(`no redirect from ${page.url()}`)), TIMEOUT))]);
    process.stdout.write(`${url}\n`);
  } else if (mode === 'ui-directory') {
    const cfg = JSON.parse(await (await import('node:fs/promises')).readFile(process.argv[6], 'utf8'));
    await page.goto(`${target}/dashboard/login`);
    await page.fill('#username', username);
    await page.fill('#password', password);
    await page.click('button[type="submit"]');
    await page.waitForURL(/\/dashboard\/clusters/);
    await page.goto(`${target}/dashboard/settings`);
    await page.fill('#l-servers', cfg.servers);
    await page.fill('#l-port', String(cfg.port));
    await page.selectOption('#l-tls', cfg.tls);
    await page.fill('#l-ca', cfg.ca);
    await page.fill('#l-sa', cfg.serviceAccount);
    await page.fill('#l-sapw', cfg.serviceAccountPassword);
    await page.fill('#l-users', cfg.userSearchBase);
    await page.fill('#l-filter', cfg.userSearchFilter);
    await page.fill('#l-groups', cfg.groupSearchBase);
    await page.check('#l-nested');
    await page.click('#ldap-form button[type="submit"]');
    await page.locator('tr[data-provider="ldap"] [data-state="Enabled"]').waitFor();
    // The password field stays empty: the secret is never sent back.
    if (await page.inputValue('#l-sapw') !== '') throw new Error('the password came back to the page');
    await page.goto(`${target}/dashboard/clusters/${cfg.cluster}`);
    await page.locator('#member-principal').pressSequentially(cfg.search, { delay: 30 });
    await page.locator(`#member-principals option[value="${cfg.principal}"]`).waitFor({ state: 'attached' });
    await page.fill('#member-principal', cfg.principal);
    await page.selectOption('#member-role', 'cluster-member');
    await page.click('form.add-member button[type="submit"]');
    await page.getByText('The member was added.').waitFor();
    process.stdout.write('ok\n');
  } else {
    await page.goto(`${target}/dashboard/login`);
    if (mode === 'ui-oidc') {
      await page.click('#oidc');
      await fillProvider();
    } else {
      await page.selectOption('#provider', 'ldap');
      await page.fill('#username', username);
      await page.fill('#password', password);
      await page.click('button[type="submit"]');
    }
    await page.waitForURL(/\/dashboard\/clusters/, { timeout: TIMEOUT }).catch(async () => {
      const text = (await page.locator('body').innerText().catch(() => '')).replace(/\s+/g, ' ').slice(0, 300);
      throw new Error(`did not reach the clusters page from ${page.url()}: ${text}`);
    });
    process.stdout.write(`${await page.locator('h1').first().innerText()}\n`);
  }
  code = 0;
} catch (err) {
  console.error(`sso.mjs: ${err.message}`);
} finally {
  await browser.close();
}
process.exit(code);
