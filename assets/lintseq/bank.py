class InsufficientFunds(Exception):
    pass


class Account:
    rate = 0.01

    def __init__(self, owner, balance=0):
        self.owner = owner
        self.balance = balance
        self.log = []

    def deposit(self, amount):
        if amount <= 0:
            raise ValueError("deposit must be positive")
        self.balance += amount
        self.log.append(("deposit", amount))

    def withdraw(self, amount):
        if amount > self.balance:
            raise InsufficientFunds(f"{self.owner} has {self.balance}")
        self.balance -= amount
        self.log.append(("withdraw", amount))

    def accrue(self, months=1):
        for _ in range(months):
            self.balance = round(self.balance * (1 + self.rate), 2)
        return self.balance


class Savings(Account):
    rate = 0.03

    def withdraw(self, amount):
        if len([e for e in self.log if e[0] == "withdraw"]) >= 2:
            raise InsufficientFunds("two withdrawals a month")
        super().withdraw(amount)


def transfer(src, dst, amount):
    src.withdraw(amount)
    try:
        dst.deposit(amount)
    except ValueError:
        src.deposit(amount)
        raise
    finally:
        print(f"transfer {amount}: {src.owner} -> {dst.owner}")


alice = Account("alice", 100)
bob = Savings("bob")
transfer(alice, bob, 30)
print(alice.accrue(12), bob.accrue(12))
