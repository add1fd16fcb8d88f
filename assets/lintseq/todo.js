const fs = require('fs');

const DEFAULT_PATH = './todo.json';

class TodoList {
  constructor(items = []) {
    this.items = items;
    this.nextId = items.reduce((m, t) => Math.max(m, t.id), 0) + 1;
  }

  add(title, { due = null, tags = [] } = {}) {
    const item = { id: this.nextId++, title, due, tags, done: false };
    this.items.push(item);
    return item;
  }

  complete(id) {
    const item = this.items.find((t) => t.id === id);
    if (!item) {
      throw new Error(`no todo ${id}`);
    }
    item.done = true;
    return item;
  }

  pending() {
    return this.items.filter((t) => !t.done).map(({ id, title }) => `${id}: ${title}`);
  }
}

function save(list, path = DEFAULT_PATH) {
  fs.writeFileSync(path, JSON.stringify(list.items, null, 2));
}

async function load(path = DEFAULT_PATH) {
  try {
    const text = await fs.promises.readFile(path, 'utf8');
    return new TodoList(JSON.parse(text));
  } catch (err) {
    console.error(`starting empty: ${err.message}`);
    return new TodoList();
  }
}

load('/nonexistent/todo.json').then((list) => {
  list.add('write tests', { tags: ['dev'] });
  list.add('ship it');
  list.complete(1);
  console.log(list.pending());
});

module.exports = { TodoList, save, load };
