package main

import (
	"fmt"
	"sort"
	"strings"
)

type pair struct {
	word  string
	count int
}

func count(text string) map[string]int {
	counts := make(map[string]int)
	for _, w := range strings.Fields(strings.ToLower(text)) {
		w = strings.Trim(w, ".,;:!?")
		if w == "" {
			continue
		}
		counts[w]++
	}
	return counts
}

func top(counts map[string]int, n int) []pair {
	pairs := make([]pair, 0, len(counts))
	for w, c := range counts {
		pairs = append(pairs, pair{word: w, count: c})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].count != pairs[j].count {
			return pairs[i].count > pairs[j].count
		}
		return pairs[i].word < pairs[j].word
	})
	if len(pairs) > n {
		pairs = pairs[:n]
	}
	return pairs
}

func main() {
	text := "the quick brown fox jumps over the lazy dog. The dog sleeps."
	for i, p := range top(count(text), 3) {
		fmt.Printf("%d. %s %d\n", i+1, p.word, p.count)
	}
}
