// Drives a real headless Chromium (Debian's `chromium`, through puppeteer-core) for the
// gRPC-Web browser test: opens URL, waits until the page marks itself done, prints the
// page's results (its <pre id="json">) on one line, and saves a screenshot.
//
// Usage: node browser.js URL SCREENSHOT.png
// Real time (no virtual time): a cancelled call must close its connection as a browser
// really does.
'use strict';

const puppeteer = require('puppeteer-core');

const TIMEOUT_MS = 60000;

async function main() {
  const [url, screenshot] = process.argv.slice(2);
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1100, height: 560 });
    const console = [];
    page.on('console', (message) => console.push(message.text()));
    await page.goto(url, { waitUntil: 'load', timeout: TIMEOUT_MS });
    await page.waitForSelector('body[data-done="true"]', { timeout: TIMEOUT_MS });
    const results = await page.$eval('#json', (element) => element.textContent);
    await page.screenshot({ path: screenshot, fullPage: true });
    process.stdout.write(`${JSON.stringify({ results: JSON.parse(results), console })}\n`);
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  process.stderr.write(`browser.js: ${error.stack || error}\n`);
  process.exit(1);
});
