package main

import (
	"errors"
	"fmt"
)

// Stack is a LIFO of ints.
type Stack struct {
	items []int
}

var ErrEmpty = errors.New("empty stack")

func (s *Stack) Push(v int) {
	s.items = append(s.items, v)
}

func (s *Stack) Pop() (int, error) {
	if len(s.items) == 0 {
		return 0, ErrEmpty
	}
	v := s.items[len(s.items)-1]
	s.items = s.items[:len(s.items)-1]
	return v, nil
}

func eval(tokens []string) (int, error) {
	var s Stack
	for _, t := range tokens {
		switch t {
		case "+", "*":
			b, err := s.Pop()
			if err != nil {
				return 0, err
			}
			a, err := s.Pop()
			if err != nil {
				return 0, err
			}
			if t == "+" {
				s.Push(a + b)
			} else {
				s.Push(a * b)
			}
		default:
			var n int
			if _, err := fmt.Sscan(t, &n); err != nil {
				return 0, fmt.Errorf("bad token %q: %w", t, err)
			}
			s.Push(n)
		}
	}
	return s.Pop()
}

func main() {
	v, err := eval([]string{"2", "3", "+", "4", "*"})
	fmt.Println(v, err)
}
