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
