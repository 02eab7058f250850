// Package credfile reads the files that hold GoTrack's credentials: bearer
// tokens, htpasswd files, password files and PEM bundles. Each reader is the
// one place its file's rules are written: the configuration check at start
// and the component that uses the file call the same function, so a file
// that passes the check is one the component accepts.
//
// Errors name the problem but never the file's content. Callers prefix them
// with the setting that named the file.
package credfile

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// MinTokenLen is the shortest bearer token accepted, in characters.
const MinTokenLen = 16

// read reads path; its error says what the file should hold.
func read(path, what string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w; want a readable file holding %s", err, what)
	}
	return b, nil
}

// ReadToken returns the bearer token held in path, surrounding white space
// removed. It must be at least MinTokenLen characters long.
func ReadToken(path string) (string, error) {
	b, err := read(path, "the bearer token")
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < MinTokenLen {
		return "", fmt.Errorf("the token in %s is shorter than %d characters; want a random token of %d or more (such as openssl rand -hex 32)", path, MinTokenLen, MinTokenLen)
	}
	return tok, nil
}

// ReadPassword returns the password held in path, without its trailing line
// break. It must not be empty.
func ReadPassword(path string) (string, error) {
	b, err := read(path, "the password")
	if err != nil {
		return "", err
	}
	pass := strings.TrimRight(string(b), "\r\n")
	if pass == "" {
		return "", fmt.Errorf("%s is empty; want the password on its first line", path)
	}
	return pass, nil
}

// ReadHtpasswd returns the users of an htpasswd file and their bcrypt
// hashes. Blank lines and lines starting with # are skipped; every other
// line must be user:bcrypt-hash, and at least one user must be listed.
func ReadHtpasswd(path string) (map[string][]byte, error) {
	b, err := read(path, "htpasswd lines of user:bcrypt-hash")
	if err != nil {
		return nil, err
	}
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("line %d: want user:bcrypt-hash (make one with htpasswd -nBC 10 USER)", n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("line %d: user %q does not have a bcrypt hash; want one made with htpasswd -nBC 10 %s", n, user, user)
		}
		users[user] = []byte(hash)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%s lists no user; want lines of user:bcrypt-hash (htpasswd -nBC 10 USER)", path)
	}
	return users, nil
}

// LoadCAPool reads a PEM bundle that must hold at least one certificate.
func LoadCAPool(path string) (*x509.CertPool, error) {
	pem, err := read(path, "PEM CA certificates")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate; want a PEM bundle of CA certificates", path)
	}
	return pool, nil
}

// LoadKeyPair reads a PEM certificate and its private key, which must match.
// The pair's Leaf is parsed.
func LoadKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err == nil && pair.Leaf == nil { // filled in by LoadX509KeyPair unless GODEBUG x509keypairleaf=0
		pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0])
	}
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%w; want a PEM certificate and its matching PEM private key", err)
	}
	return pair, nil
}
