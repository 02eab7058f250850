package credfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/gotrack/gotrack/internal/testpki"
)

func write(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReaders(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	ca := testpki.NewCA(t, "test CA")
	dir := t.TempDir()
	cert, key := ca.Server(t, "server").Write(t, dir, "server")
	for _, tc := range []struct {
		name    string
		read    func() error
		problem string // "" when the file is good
	}{
		{"token", func() error { _, err := ReadToken(write(t, "  0123456789abcdef\n")); return err }, ""},
		{"short token", func() error { _, err := ReadToken(write(t, "0123456789abcde")); return err }, "shorter than 16 characters; want"},
		{"missing token", func() error { _, err := ReadToken(filepath.Join(dir, "none")); return err }, "no such file or directory; want a readable file holding the bearer token"},
		{"password", func() error { _, err := ReadPassword(write(t, "pw\r\n")); return err }, ""},
		{"empty password", func() error { _, err := ReadPassword(write(t, "\n")); return err }, "is empty; want the password"},
		{"htpasswd", func() error { _, err := ReadHtpasswd(write(t, "# users\n\nalice:"+string(hash)+"\n")); return err }, ""},
		{"htpasswd plain", func() error { _, err := ReadHtpasswd(write(t, "alice:"+string(hash)+"\nbob:secret\n")); return err }, `line 2: user "bob" does not have a bcrypt hash`},
		{"htpasswd no colon", func() error { _, err := ReadHtpasswd(write(t, "alice\n")); return err }, "line 1: want user:bcrypt-hash"},
		{"htpasswd empty", func() error { _, err := ReadHtpasswd(write(t, "# nobody\n")); return err }, "lists no user"},
		{"CA", func() error { _, err := LoadCAPool(write(t, string(ca.CertPEM))); return err }, ""},
		{"CA garbage", func() error { _, err := LoadCAPool(write(t, "garbage")); return err }, "holds no PEM certificate; want"},
		{"key pair", func() error { _, err := LoadKeyPair(cert, key); return err }, ""},
		{"key pair swapped", func() error { _, err := LoadKeyPair(key, cert); return err }, "; want a PEM certificate and its matching PEM private key"},
	} {
		err := tc.read()
		switch {
		case tc.problem == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.problem != "" && (err == nil || !strings.Contains(err.Error(), tc.problem)):
			t.Errorf("%s: error %v, want it to say %q", tc.name, err, tc.problem)
		}
	}
	if p, err := ReadPassword(write(t, "pw\r\n")); p != "pw" || err != nil {
		t.Errorf("ReadPassword = %q, %v; want pw without its line break", p, err)
	}
	if tok, err := ReadToken(write(t, "  0123456789abcdef\n")); tok != "0123456789abcdef" || err != nil {
		t.Errorf("ReadToken = %q, %v; want the token without white space", tok, err)
	}
}
