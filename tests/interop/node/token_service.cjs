// @azure/identity's ManagedIdentityCredential, unmodified, reading IDENTITY_ENDPOINT / IDENTITY_HEADER: prints the
// token's claims (never the token) as one JSON line, or the error text. Used by tests/interop/token_service.py.
const { ManagedIdentityCredential } = require("@azure/identity");

async function main() {
  const scope = process.argv[2];
  try {
    const token = await new ManagedIdentityCredential().getToken(scope);
    const payload = token.token.split(".")[1];
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
    console.log(JSON.stringify({ claims, expiresOnTimestamp: token.expiresOnTimestamp }));
  } catch (e) {
    console.log(JSON.stringify({ error: String(e && e.message ? e.message : e) }));
  }
}

main();
