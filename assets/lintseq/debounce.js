export function debounce(fn, wait) {
  let timer = null;
  return function (...args) {
    clearTimeout(timer);
    timer = setTimeout(() => fn.apply(this, args), wait);
  };
}

export function memoize(fn) {
  const cache = new Map();
  return (key) => {
    if (!cache.has(key)) {
      cache.set(key, fn(key));
    }
    return cache.get(key);
  };
}

const slowSquare = (n) => {
  let total = 0;
  for (let i = 0; i < n; i++) {
    total += n;
  }
  return total;
};

const fastSquare = memoize(slowSquare);
const log = debounce((msg) => console.log(msg), 10);
for (const n of [3, 4, 3]) {
  log(`square of ${n} is ${fastSquare(n)}`);
}
