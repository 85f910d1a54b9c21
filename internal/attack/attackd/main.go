// Command attackd runs the attack suite of issue 10 against listeners on
// loopback and prints the figures of docs/security.md.
//
//	go run ./internal/attack/attackd -all -duration 10s
//
// The rows that forge FSP packets need psi/fsp's internal wire format, so
// they are tests there; -all runs them with go test and copies their rows.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/internal/attack/cases"
)

func main() {
	all := flag.Bool("all", false, "also run the FSP rows (go test ./psi/fsp -run TestAttack)")
	run := flag.String("run", "", "run only the rows whose name matches this regular expression")
	duration := flag.Duration("duration", 5*time.Second, "how long each attack runs")
	rate := flag.Float64("rate", 10, "legitimate dials a second")
	flag.Parse()
	re, err := regexp.Compile(*run)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	o := attack.Options{Duration: *duration, Rate: *rate}
	var rows, notes []string
	failed := false
	for _, row := range cases.All {
		if !re.MatchString(row.Name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "running %s\n", row.Name)
		r, err := row.Run(o)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", row.Name, err)
			failed = true
			continue
		}
		rows = append(rows, r.Row())
		notes = append(notes, "- "+r.String())
		if row.Open != "" {
			notes = append(notes, "  (open: "+row.Open+")")
		}
	}
	if *all {
		fmt.Fprintln(os.Stderr, "running the FSP rows: go test ./psi/fsp -run TestAttack")
		fr, fn, err := fspRows(*duration, re)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			failed = true
		}
		rows = append(rows, fr...)
		notes = append(notes, fn...)
	}
	fmt.Println(attack.Header)
	for _, r := range rows {
		fmt.Println(r)
	}
	fmt.Println()
	for _, n := range notes {
		fmt.Println(n)
	}
	if failed {
		os.Exit(1)
	}
}

// fspRows runs psi/fsp's attack tests and returns their rows and notes.
func fspRows(d time.Duration, re *regexp.Regexp) (rows, notes []string, err error) {
	cmd := exec.Command("go", "test", "-count=1", "-v", "-run", "TestAttack", "./psi/fsp",
		"-args", "-attack.duration="+d.String())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	err = cmd.Run()
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		_, rest, ok := strings.Cut(line, ": ")
		if !ok || !strings.HasPrefix(line, "attack_test.go") {
			if strings.HasPrefix(line, "--- FAIL") {
				notes = append(notes, "- "+line)
			}
			continue
		}
		if row, ok := strings.CutPrefix(rest, "ROW "); ok {
			if re.MatchString(row) {
				rows = append(rows, row)
			}
		} else if strings.HasPrefix(rest, "FSP ") && strings.Contains(rest, "no attack") {
			notes = append(notes, "- "+rest)
		}
	}
	return rows, notes, err
}
