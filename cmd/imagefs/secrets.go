package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/imagefs/imagefs/auth"
)

// Secrets from files. Each secret of authFlags (--os-password, OS_PASSWORD)
// has a twin --NAME-file (NAME_FILE) naming a file that holds it, and under
// systemd a credential named NAME ($CREDENTIALS_DIRECTORY/NAME, from
// LoadCredential=NAME:/path) supplies a secret that neither sets. Giving a
// secret and its file is an error. The order is: the secret or its file,
// then the credential, then clouds.yaml/secure.yaml.

// secretSource is one secret of authFlags and the names it goes by.
type secretSource struct {
	name string // its flag, os-password; also its systemd credential
	env  string // its variable, OS_PASSWORD
	what string // for messages: "password"
	cat  string // the help category
	dst  *auth.Secret

	// file is where the secret was read from (its --NAME-file or systemd
	// credential; "" if neither), credential tells which: rotate.go reads
	// it again.
	file       string
	credential bool
}

func (s *secretSource) fileName() string { return s.name + "-file" }
func (s *secretSource) fileEnv() string  { return s.env + "_FILE" }

// secretFlag is the flag of one secret (authFlags' helper); withSecretFiles
// adds its file flag.
func (c *Config) secretFlag(cat, name, env, what string, dst *auth.Secret) cli.Flag {
	s := &secretSource{name: name, env: env, what: what, cat: cat, dst: dst}
	c.secrets = append(c.secrets, s)
	return &cli.GenericFlag{Name: name, EnvVars: []string{env}, Value: &secretValue{dst}, Category: cat,
		Usage: fmt.Sprintf("%s (better: --%s, or the systemd credential %s; a flag shows in ps)", what, s.fileName(), name)}
}

// withSecretFiles adds each secret's --NAME-file flag (help lists the
// flags by name: it comes right after the secret's).
func (c *Config) withSecretFiles(flags []cli.Flag) []cli.Flag {
	for _, s := range c.secrets {
		flags = append(flags, s.fileFlag())
	}
	return flags
}

// fileFlag is --NAME-file. Its Action reads the file once the flags are
// parsed, before the command runs, so a bad file is the only error shown.
func (s *secretSource) fileFlag() cli.Flag {
	return &cli.StringFlag{Name: s.fileName(), EnvVars: []string{s.fileEnv()}, Category: s.cat,
		Usage:  fmt.Sprintf("file holding the %s (one line; a trailing newline is stripped)", s.what),
		Action: func(_ *cli.Context, path string) error { return s.fromFile(path) }}
}

// fromFile sets the secret from the file at path ("": not given).
func (s *secretSource) fromFile(path string) error {
	if path == "" {
		return nil
	}
	if *s.dst != "" {
		return fmt.Errorf("the %s is given twice: --%s (%s) and --%s (%s) are both set; keep only the file",
			s.what, s.name, s.env, s.fileName(), s.fileEnv())
	}
	v, err := readSecret(path)
	if err != nil {
		return fmt.Errorf("--%s (%s) %s: %v", s.fileName(), s.fileEnv(), path, err)
	}
	*s.dst, s.file = v, path
	return nil
}

// secretsFromCredentials fills the secrets still unset from the systemd
// credentials of the same names, when systemd passes some
// ($CREDENTIALS_DIRECTORY). A credential that is not there is no error: a
// unit loads only those its mode needs.
func (c *Config) secretsFromCredentials() error {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		return nil
	}
	var errs []error
	for _, s := range c.secrets {
		if *s.dst != "" {
			continue
		}
		p := filepath.Join(dir, s.name)
		v, err := readSecret(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			errs = append(errs, fmt.Errorf("systemd credential %s (%s): %v", s.name, p, err))
		default:
			*s.dst, s.file, s.credential = v, p, true
		}
	}
	return errors.Join(errs...)
}

// maxSecretSize bounds a secret file: tokens are a few KiB at most, and a
// wrong path such as /dev/zero must not fill the memory.
const maxSecretSize = 64 << 10

// readSecret reads a secret file: its content without a trailing newline.
// Its errors never quote the content, nor the path (the caller names it).
func readSecret(path string) (auth.Secret, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", pathless(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return "", pathless(err)
	}
	if len(b) > maxSecretSize {
		return "", fmt.Errorf("larger than %s: not a secret file", human(maxSecretSize))
	}
	v := string(b)
	if t, ok := strings.CutSuffix(v, "\n"); ok {
		v = strings.TrimSuffix(t, "\r")
	}
	switch {
	case v == "":
		return "", errors.New("is empty")
	case strings.ContainsAny(v, "\r\n"):
		return "", errors.New("has more than one line: it must hold the secret alone")
	}
	return auth.Secret(v), nil
}

// pathless drops the path an *fs.PathError repeats ("open /x: no such
// file"), keeping errors.Is working.
func pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
